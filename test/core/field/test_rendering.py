"""Volume rendering: worked examples with known answers, masking and gradients."""
from __future__ import annotations

import math

import pytest
import torch

from panoptic_mapping.core.field.rendering import (
    accumulated_opacity,
    alpha_from_density,
    composite,
    composite_normalized,
    composite_probabilities,
    deltas_from_edges,
    deltas_from_intervals,
    render_depth,
    weights_from_alpha,
    weights_from_density,
)


def test_deltas_and_midpoints_from_edges_and_intervals():
    edges = torch.tensor([[0.0, 1.0, 3.0, 3.5]])
    deltas, t_mid = deltas_from_edges(edges)
    assert deltas.tolist() == [[1.0, 2.0, 0.5]] and t_mid.tolist() == [[0.5, 2.0, 3.25]]
    deltas, t_mid = deltas_from_intervals(torch.tensor([[1.0, 4.0]]), torch.tensor([[2.0, 4.5]]))
    assert deltas.tolist() == [[1.0, 0.5]] and t_mid.tolist() == [[1.5, 4.25]]


def test_alpha_is_one_minus_exp_and_precise_for_tiny_densities():
    sigma = torch.tensor([[0.0, 1.0, 2.0, -3.0]])
    deltas = torch.tensor([[1.0, 0.5, 0.25, 1.0]])
    alpha = alpha_from_density(sigma, deltas)
    expected = [0.0, 1 - math.exp(-0.5), 1 - math.exp(-0.5), 0.0]  # negative sigma -> 0
    assert alpha[0].tolist() == pytest.approx(expected, rel=1e-6)
    tiny = alpha_from_density(torch.tensor([[1e-9]]), torch.tensor([[1e-3]]))
    assert tiny.item() == pytest.approx(1e-12, rel=1e-5)  # 1 - exp(-x) would give 0


def test_one_very_dense_sample_takes_all_the_weight():
    sigma = torch.tensor([[0.0, 1e6, 0.0, 5.0]])
    deltas = torch.full((1, 4), 0.1)
    weights, transmittance = weights_from_density(sigma, deltas)
    assert weights[0].tolist() == pytest.approx([0.0, 1.0, 0.0, 0.0], abs=1e-6)
    assert transmittance[0, :2].tolist() == [1.0, 1.0]
    assert transmittance[0, 2:].max().item() <= 1e-9  # nothing reaches behind it


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_two_samples_weights_are_a1_and_one_minus_a1_times_a2(dtype):
    a1, a2 = 0.3, 0.6
    weights, transmittance = weights_from_alpha(torch.tensor([[a1, a2]], dtype=dtype))
    assert weights[0, 0].item() == pytest.approx(a1, rel=1e-7)
    assert weights[0, 1].item() == pytest.approx((1 - a1) * a2, rel=1e-7)  # 0.42
    assert transmittance[0].tolist() == pytest.approx([1.0, 1 - a1], rel=1e-7)
    assert accumulated_opacity(weights).item() == pytest.approx(1 - (1 - a1) * (1 - a2))


@pytest.mark.parametrize("n_samples", [1, 2, 7, 64, 1000])
def test_constant_density_opacity_is_independent_of_the_subdivision(n_samples):
    sigma, length = 1.7, 1.3
    # uneven subdivision of [2, 2 + L]
    cuts = torch.sort(torch.rand(n_samples - 1, dtype=torch.float64)).values * length
    edges = torch.cat((torch.zeros(1, dtype=torch.float64), cuts,
                       torch.tensor([length], dtype=torch.float64))) + 2.0
    deltas, _ = deltas_from_edges(edges.unsqueeze(0))
    weights, _ = weights_from_density(torch.full_like(deltas, sigma), deltas)
    expected = 1 - math.exp(-sigma * length)
    assert accumulated_opacity(weights).item() == pytest.approx(expected, rel=1e-12)
    w32, _ = weights_from_density(torch.full_like(deltas, sigma).float(), deltas.float())
    assert accumulated_opacity(w32).item() == pytest.approx(expected, rel=1e-5)


def test_depth_of_a_single_opaque_sample_is_its_t():
    t_mid = torch.tensor([[1.0, 2.5, 4.0]])
    alpha = torch.tensor([[0.0, 1.0, 0.7]])
    weights, _ = weights_from_alpha(alpha)
    assert render_depth(weights, t_mid).item() == pytest.approx(2.5)
    assert render_depth(weights, t_mid, normalize=True).item() == pytest.approx(2.5)


def test_expected_depth_with_partial_opacity():
    # weights 0.5 at t=1 and 0.25 at t=3: sum w t = 1.25; given termination 1.25 / 0.75
    weights, _ = weights_from_alpha(torch.tensor([[0.5, 0.5]]))
    t_mid = torch.tensor([[1.0, 3.0]])
    assert render_depth(weights, t_mid).item() == pytest.approx(1.25)
    assert render_depth(weights, t_mid, normalize=True).item() == pytest.approx(1.25 / 0.75)
    assert render_depth(torch.zeros(1, 2), t_mid, normalize=True).item() == 0.0  # no NaN


def test_compositing_a_constant_colour_gives_colour_times_opacity():
    torch.manual_seed(0)
    sigma = torch.rand(5, 16) * 3
    deltas = torch.rand(5, 16) * 0.2
    weights, _ = weights_from_density(sigma, deltas)
    colour = torch.tensor([0.2, 0.5, 0.9])
    rgb = composite(weights, colour.expand(5, 16, 3))
    opacity = accumulated_opacity(weights)
    assert rgb.shape == (5, 3)
    torch.testing.assert_close(rgb, opacity[:, None] * colour)


def test_normalized_features_are_unit_and_safe_at_zero_opacity():
    features = torch.nn.functional.normalize(torch.randn(2, 4, 8), dim=-1)
    weights = torch.tensor([[0.1, 0.3, 0.2, 0.1], [0.0, 0.0, 0.0, 0.0]], requires_grad=True)
    out = composite_normalized(weights, features)
    assert out[0].norm().item() == pytest.approx(1.0, abs=1e-6)
    assert out[1].abs().sum().item() == 0.0  # zero vector, not NaN
    out.sum().backward()
    assert torch.isfinite(weights.grad).all()
    # the direction is that of the weighted sum
    direction = (weights[0, :, None] * features[0]).sum(0)
    torch.testing.assert_close(out[0], direction / direction.norm())


def test_probabilities_stay_in_the_simplex():
    probs = torch.softmax(torch.randn(3, 5, 4) * 3, dim=-1)
    weights = torch.tensor([[0.2, 0.3, 0.1, 0.1, 0.05],  # opacity 0.75
                            [1e-9, 0.0, 0.0, 0.0, 0.0],   # almost empty ray
                            [0.0, 0.0, 0.0, 0.0, 0.0]])
    p = composite_probabilities(weights, probs)
    assert p.shape == (3, 4)
    assert (p >= 0).all() and (p <= 1).all()
    assert p[0].sum().item() == pytest.approx(1.0, abs=1e-6)
    assert p[1].sum().item() < 1e-2  # empty space is not amplified to a full distribution
    assert p[2].sum().item() == 0.0


def test_gradients_flow_to_density_and_values():
    sigma = torch.tensor([[0.5, 2.0, 1.0]], requires_grad=True)
    colour = torch.rand(1, 3, 3, requires_grad=True)
    deltas = torch.tensor([[0.5, 0.5, 0.5]])
    weights, _ = weights_from_density(sigma, deltas)
    rgb = composite(weights, colour)
    rgb.sum().backward()
    assert torch.isfinite(sigma.grad).all() and sigma.grad.abs().sum() > 0
    torch.testing.assert_close(colour.grad, weights.detach()[..., None].expand(1, 3, 3))
    # dC/dsigma by central differences (float64) for the first channel
    s64 = sigma.detach().double()

    def red(s: torch.Tensor) -> float:
        w, _ = weights_from_density(s, deltas.double())
        return composite(w, colour.detach().double())[0, 0].item()

    h = 1e-6
    for i in range(3):
        plus, minus = s64.clone(), s64.clone()
        plus[0, i] += h
        minus[0, i] -= h
        numeric = (red(plus) - red(minus)) / (2 * h)
        sig = s64.clone().requires_grad_(True)
        w, _ = weights_from_density(sig, deltas.double())
        composite(w, colour.detach().double())[0, 0].backward()
        assert sig.grad[0, i].item() == pytest.approx(numeric, rel=1e-6, abs=1e-9)


def test_gradients_stay_finite_through_an_opaque_sample():
    alpha = torch.tensor([[1.0, 0.5, 0.3]], requires_grad=True)
    weights, _ = weights_from_alpha(alpha)
    composite(weights, torch.ones(1, 3, 2)).sum().backward()
    assert torch.isfinite(alpha.grad).all()


def test_padded_samples_contribute_nothing_even_if_garbage():
    sigma = torch.tensor([[1.0, 3.0, 0.5, 0.0], [2.0, 0.5, 0.0, 0.0]])
    deltas = torch.tensor([[0.3, 0.3, 0.3, 0.0], [0.2, 0.4, 0.0, 0.0]])
    t_mid = torch.tensor([[1.0, 1.3, 1.6, 0.0], [1.0, 1.3, 0.0, 0.0]])
    colour = torch.rand(2, 4, 3)
    mask = torch.tensor([[True, True, True, False], [True, True, False, False]])
    # garbage where padded, as an unmasked field evaluation of padding might return
    sigma_g = torch.where(mask, sigma, torch.tensor(math.nan)).requires_grad_(True)
    deltas_g = torch.where(mask, deltas, torch.tensor(math.inf))
    colour_g = torch.where(mask[..., None], colour, torch.tensor(math.nan)).requires_grad_(True)
    t_g = torch.where(mask, t_mid, torch.tensor(1e9))
    w_g, _ = weights_from_density(sigma_g, deltas_g, mask)
    rgb = composite(w_g, colour_g, mask)
    depth = render_depth(w_g, t_g, mask)
    feats = composite_normalized(w_g, colour_g, mask)
    probs_g = torch.where(mask[..., None], colour.softmax(-1), torch.tensor(math.nan))
    probs = composite_probabilities(w_g, probs_g.requires_grad_(True), mask)
    (rgb.sum() + depth.sum() + feats.sum() + probs.sum()).backward()
    for out in (rgb, depth, feats, probs, w_g):
        assert torch.isfinite(out).all()
    assert (w_g[~mask] == 0).all()
    assert torch.isfinite(sigma_g.grad).all() and (sigma_g.grad[~mask] == 0).all()
    for grad in (colour_g.grad, probs_g.grad):
        assert torch.isfinite(grad).all() and (grad[~mask] == 0).all()
    # each ray renders exactly as the same ray without its padding
    for r, n in enumerate((3, 2)):
        w, _ = weights_from_density(sigma[r:r + 1, :n], deltas[r:r + 1, :n])
        torch.testing.assert_close(rgb[r:r + 1], composite(w, colour[r:r + 1, :n]))
        torch.testing.assert_close(depth[r:r + 1], render_depth(w, t_mid[r:r + 1, :n]))


def test_shapes_batch_over_leading_dimensions():
    sigma = torch.rand(2, 3, 5)
    deltas = torch.full((2, 3, 5), 0.1)
    weights, transmittance = weights_from_density(sigma, deltas)
    assert weights.shape == transmittance.shape == (2, 3, 5)
    assert composite(weights, torch.rand(2, 3, 5, 4)).shape == (2, 3, 4)
    assert render_depth(weights, torch.rand(2, 3, 5)).shape == (2, 3)
