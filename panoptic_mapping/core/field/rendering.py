"""Volume rendering along rays: stateless functions on a dense (rays x samples) layout.

Shapes used throughout:

* ``R`` rays, ``S`` samples per ray, ``C`` channels (colour, features, class scores).
* ``t_edges``: ``(R, S + 1)`` sample interval boundaries along each ray (metres), sorted;
  or ``t_starts``, ``t_ends``: ``(R, S)``.
* ``deltas``, ``t_mid``: ``(R, S)`` interval lengths and midpoints.
* ``sigma``: ``(R, S)`` volume density (1/m, non-negative); ``alpha``: ``(R, S)`` opacity of
  each interval; ``weights``: ``(R, S)`` the probability that the ray terminates in each
  interval; ``values``: ``(R, S, C)``.
* ``mask``: optional ``(R, S)`` bool, True for real samples, False for padding (rays with
  fewer than ``S`` samples). A padded sample contributes nothing, and whatever its inputs
  hold (even NaN) reaches neither the outputs nor the gradients: masked entries are
  replaced with zeros (``torch.where``, not a product, since ``0 * NaN`` is NaN) before use.

The quadrature is the usual one (Max 1995, NeRF): ``alpha_i = 1 - exp(-sigma_i delta_i)``,
``T_i = prod_{j<i} (1 - alpha_j)``, ``w_i = alpha_i T_i``. All functions are differentiable
with respect to their floating-point inputs and keep no state.

This module is ROS-free.
"""
from __future__ import annotations

import torch
from torch import Tensor

__all__ = [
    "deltas_from_edges",
    "deltas_from_intervals",
    "alpha_from_density",
    "weights_from_alpha",
    "weights_from_density",
    "accumulated_opacity",
    "composite",
    "render_depth",
    "composite_normalized",
    "composite_probabilities",
]

# Lower bound of a sample's transmitted fraction (1 - alpha): keeps the cumulative product
# and its gradient (which divides by the factors) finite when a sample is fully opaque.
TRANSMITTANCE_EPS = 1e-10


def _masked(x: Tensor, mask: Tensor | None) -> Tensor:
    """``x`` with padded samples set to 0; ``mask`` ``(R, S)`` broadcasts over trailing dims."""
    if mask is None:
        return x
    m = mask.reshape(*mask.shape, *([1] * (x.dim() - mask.dim())))
    return torch.where(m, x, torch.zeros((), dtype=x.dtype, device=x.device))


# --------------------------------------------------------------------------- intervals


def deltas_from_edges(t_edges: Tensor) -> tuple[Tensor, Tensor]:
    """Interval lengths and midpoints from sorted boundaries.

    Args:
        t_edges: ``(R, S + 1)`` boundaries of the ``S`` intervals along each ray.

    Returns:
        deltas: ``(R, S)`` ``t_edges[:, 1:] - t_edges[:, :-1]``.
        t_mid: ``(R, S)`` interval midpoints.
    """
    return deltas_from_intervals(t_edges[..., :-1], t_edges[..., 1:])


def deltas_from_intervals(t_starts: Tensor, t_ends: Tensor) -> tuple[Tensor, Tensor]:
    """Interval lengths and midpoints from per-sample starts and ends (``(R, S)`` each),
    for samplers whose intervals need not touch.

    Returns:
        deltas: ``(R, S)`` ``t_ends - t_starts``; t_mid: ``(R, S)``.
    """
    return t_ends - t_starts, 0.5 * (t_starts + t_ends)


# --------------------------------------------------------------------------- weights


def alpha_from_density(sigma: Tensor, deltas: Tensor, mask: Tensor | None = None) -> Tensor:
    """Opacity of each interval: ``alpha = 1 - exp(-sigma * delta)``.

    Args:
        sigma: ``(R, S)`` densities; negative values are treated as 0 (clamped, so they
            get no gradient: the field should end in a non-negative activation).
        deltas: ``(R, S)`` interval lengths.
        mask: optional ``(R, S)`` bool, False for padded samples (alpha 0).

    Returns:
        ``(R, S)`` alpha in ``[0, 1]``.
    """
    optical_depth = _masked(sigma, mask).clamp_min(0.0) * _masked(deltas, mask)
    # -expm1(-x) keeps full precision for the tiny optical depths of empty space, where
    # 1 - exp(-x) would cancel to 0 in float32.
    return -torch.expm1(-optical_depth)


def weights_from_alpha(alpha: Tensor, mask: Tensor | None = None,
                       eps: float = TRANSMITTANCE_EPS) -> tuple[Tensor, Tensor]:
    """Termination probabilities from interval opacities.

    ``T_i = prod_{j<i} max(1 - alpha_j, eps)`` (an exclusive cumulative product) and
    ``w_i = alpha_i T_i``. The factors are clamped to at least ``eps`` rather than shifted
    by it, so ``T`` never exceeds 1; an opaque sample leaves ``eps`` transmittance, which
    keeps the product's gradient (a division by the factors) finite.

    Args:
        alpha: ``(R, S)`` opacities in ``[0, 1]``.
        mask: optional ``(R, S)`` bool, False for padded samples (weight 0, no occlusion).
        eps: smallest transmitted fraction per sample.

    Returns:
        weights: ``(R, S)`` non-negative, summing to at most 1 (up to rounding) per ray.
        transmittance: ``(R, S)`` ``T_i``, the probability of reaching sample ``i``.
    """
    alpha = _masked(alpha, mask)
    keep = torch.clamp(1.0 - alpha, min=eps)
    ones = torch.ones_like(keep[..., :1])
    transmittance = torch.cumprod(torch.cat((ones, keep[..., :-1]), dim=-1), dim=-1)
    return alpha * transmittance, transmittance


def weights_from_density(sigma: Tensor, deltas: Tensor,
                         mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """:func:`alpha_from_density` then :func:`weights_from_alpha`: ``(R, S)`` inputs ->
    ``(weights (R, S), transmittance (R, S))``."""
    return weights_from_alpha(alpha_from_density(sigma, deltas, mask), mask)


# --------------------------------------------------------------------------- compositing


def accumulated_opacity(weights: Tensor) -> Tensor:
    """``(R, S)`` weights -> ``(R,)`` probability that the ray terminates at all."""
    return weights.sum(dim=-1)


def composite(weights: Tensor, values: Tensor, mask: Tensor | None = None) -> Tensor:
    """Weighted sum of per-sample values along each ray.

    Args:
        weights: ``(R, S)``.
        values: ``(R, S, C)``.
        mask: optional ``(R, S)`` bool; padded samples' values are ignored even if NaN.

    Returns:
        ``(R, C)`` ``sum_i w_i v_i`` (not normalised: a ray that hits nothing gives 0,
        i.e. a black background; add ``(1 - opacity) * background`` for another one).
    """
    weights = _masked(weights, mask)
    values = _masked(values, mask)
    return torch.einsum("...s,...sc->...c", weights, values)


def render_depth(weights: Tensor, t_mid: Tensor, mask: Tensor | None = None, *,
                 normalize: bool = False, eps: float = 1e-10) -> Tensor:
    """Expected termination depth along each ray.

    Args:
        weights: ``(R, S)``.
        t_mid: ``(R, S)`` sample depths (interval midpoints).
        mask: optional ``(R, S)`` bool.
        normalize: False: ``sum_i w_i t_i`` (a ray that escapes counts as depth 0, which
            penalises transparency in a depth loss); True: divided by the opacity,
            ``max(sum_i w_i, eps)``, the expected depth given that the ray terminates.

    Returns:
        ``(R,)`` depths in the units of ``t_mid``.
    """
    depth = composite(weights, t_mid.unsqueeze(-1), mask).squeeze(-1)
    if normalize:
        depth = depth / accumulated_opacity(_masked(weights, mask)).clamp_min(eps)
    return depth


def composite_normalized(weights: Tensor, features: Tensor, mask: Tensor | None = None,
                         eps: float = 1e-8) -> Tensor:
    """Composite unit-norm features, then renormalise to unit length.

    Blending unit vectors shortens them; the direction is what matters (e.g. for cosine
    similarity with text embeddings), so it is normalised after compositing.

    Args:
        weights: ``(R, S)``.
        features: ``(R, S, C)`` (unit-norm per sample, though any vectors work).
        mask: optional ``(R, S)`` bool.
        eps: norms below it are not divided by: a ray with zero opacity gives the zero
            vector (and finite gradients), not NaN.

    Returns:
        ``(R, C)`` unit vectors, or zero where nothing was composited.
    """
    blended = composite(weights, features, mask)
    return torch.nn.functional.normalize(blended, dim=-1, eps=eps)


def composite_probabilities(weights: Tensor, probs: Tensor, mask: Tensor | None = None,
                            eps: float = 1e-6) -> Tensor:
    """Composite per-sample class distributions into one distribution per ray.

    The blend ``sum_i w_i p_i`` sums to the ray's opacity, not 1; it is divided by
    ``max(opacity, eps)``: a ray that hits something (opacity >= eps) gets an exact
    distribution, a ray through empty space gets a vector summing to ``opacity / eps < 1``
    (not amplified noise); entries stay in ``[0, 1]`` whatever the opacity.

    Args:
        weights: ``(R, S)``.
        probs: ``(R, S, K)`` non-negative, each summing to 1 over ``K``.
        mask: optional ``(R, S)`` bool.
        eps: smallest opacity that is renormalised to 1.

    Returns:
        ``(R, K)`` class probabilities.
    """
    weights = _masked(weights, mask)
    blended = composite(weights, probs, mask)
    return blended / accumulated_opacity(weights).clamp_min(eps).unsqueeze(-1)
