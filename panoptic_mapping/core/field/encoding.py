"""Multiresolution hash-grid encoding (Instant-NGP) with tiny-cuda-nn's exact semantics.

Two interchangeable modules encode world positions (metres) into per-level features:

* :class:`HashGridEncoding`: the plain-PyTorch reference (CPU or any torch device), with
  a hand-written backward for the table gather;
* :class:`TcnnHashGridEncoding`: a thin wrapper around ``tinycudann.Encoding`` (CUDA only,
  optional: tinycudann is not on any package registry and is imported lazily).

:func:`make_hash_grid` picks the tcnn one when it can be used and the reference otherwise.

Both hold the same single flat parameter ``params`` (tcnn's layout: levels concatenated,
entry ``i`` of level ``l`` at ``(offset[l] + i) * F``, its ``F`` features contiguous), the
same cube centre buffer ``center``, and produce the same output for the same parameters,
so a ``state_dict`` saved from one loads into the other.

Semantics (tiny-cuda-nn ``include/tiny-cuda-nn/encodings/grid.h`` and ``common_device.h``):

* A world point ``x`` is normalised into the unit cube ``u = (x - center) / (2 h) + 0.5``
  (``h`` = ``half_extent_m``) and clamped to ``[0, 1]^3``: a point outside the cube gets the
  features of the nearest point on the cube's surface (tcnn itself would wrap around; both
  modules clamp before encoding, so they agree). :meth:`contains` says which points are in.
* Level ``l`` has ``scale_l = base_resolution * per_level_scale**l - 1`` (``grid_scale``,
  float32) and ``grid_resolution_l = ceil(scale_l) + 1`` vertices per axis;
  ``pos = u * scale_l + 0.5`` (``pos_fract``: ``fmaf``), ``pos_grid = floor(pos)``,
  ``frac = pos - pos_grid``; the result is the trilinear (``InterpolationType::Linear``)
  blend of the features of the cell's 8 vertices (``kernel_grid``).
* A vertex's table entry (``grid_index``): dense ``i + j r + k r^2`` when the level's
  dense grid fits its table (``r^3 <= size_l``), else the coherent-prime spatial hash
  ``i * 1 ^ j * 2654435761 ^ k * 805459861`` (uint32 arithmetic); then modulo ``size_l``.
  ``size_l = min(next_multiple(r^3, 8), 2**log2_hashmap_size)`` (``GridEncodingTemplated``).
* Output ``(N, n_levels * F)``, level-major: column ``l * F + f`` is feature ``f`` of level ``l``.

The reference computes ``pos`` in float64 and rounds it once to float32, which reproduces
``fmaf`` (single rounding) except in vanishingly rare double-rounding ties; ``scale_l`` is
computed in float32 as tcnn's host code does. tcnn's CUDA ``exp2f`` may differ from it by an
ulp, so outputs agree to float32 rounding of ``pos`` (about 1e-3 of a finest cell), not bit
for bit. The table layout (``n_params``) is checked against tcnn's when wrapping it.

Gradients flow to the table only: the gradient with respect to the input positions is not
computed (the reference's autograd function returns ``None`` for it, so positions that
require grad receive none; use finite differences or tcnn if normals are needed).

This module is ROS-free and imports tinycudann only inside :func:`_import_tcnn`.
"""
from __future__ import annotations

import logging
import math
from contextlib import nullcontext
import time
import warnings
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from panoptic_mapping.params import ConfigError, param, validate_fields

__all__ = [
    "HashGridConfig",
    "HashGridLayout",
    "HashGridEncoding",
    "TcnnHashGridEncoding",
    "make_hash_grid",
    "tcnn_unavailable_reason",
    "center_from_points",
    "benchmark_encoding",
]

_log = logging.getLogger(__name__)

# tiny-cuda-nn common_device.h coherent_prime_hash: factors of dimensions x, y, z.
HASH_PRIMES = (1, 2654435761, 805459861)
# common_device.h grid_index: largest 3-D resolution whose dense stride r^3 fits in uint32.
_MAX_DENSE_BASE_3D = 0x659
# grid.h GridEncodingTemplated: params_in_level is rounded up to a multiple of 8 (alignment).
_LEVEL_ALIGNMENT = 8
_UINT32_MAX = 0xFFFFFFFF


# --------------------------------------------------------------------------- configuration


@dataclass
class HashGridConfig:
    """Multiresolution hash grid of the neural field (tiny-cuda-nn ``HashGrid``)."""

    n_levels: int = param(12, "Number of grid levels, from the coarsest to the finest cell "
                          "size.", minimum=1, maximum=32)
    features_per_level: int = param(2, "Trainable features stored per grid vertex and level "
                                    "(tiny-cuda-nn supports 1, 2, 4 or 8).",
                                    choices=(1, 2, 4, 8))
    log2_hashmap_size: int = param(15, "log2 of the number of table entries per level; 15 "
                                   "keeps CPU training fast, 19 is typical on a GPU.",
                                   minimum=4, maximum=24)
    coarsest_cell_m: float = param(0.5, "Cell size, in metres, of the coarsest level "
                                   "(sets tiny-cuda-nn's base_resolution).", minimum=1e-4)
    finest_cell_m: float = param(0.01, "Cell size, in metres, of the finest level (sets "
                                 "per_level_scale); at most coarsest_cell_m.", minimum=1e-4)
    half_extent_m: float = param(64.0, "Half the edge, in metres, of the cube the encoding "
                                 "covers, centred on the first frame's data; large so that "
                                 "the map keeps working when the camera travels far; points "
                                 "outside are clamped to the cube's surface.", minimum=0.01)
    init_scale: float = param(1e-4, "Table entries start uniform in [-init_scale, "
                              "init_scale] (tiny-cuda-nn uses 1e-4).", minimum=0.0)


# --------------------------------------------------------------------------- layout


def _next_multiple(value: int, divisor: int) -> int:
    """``common.h`` ``next_multiple``."""
    return (value + divisor - 1) // divisor * divisor


@dataclass(frozen=True)
class HashGridLayout:
    """Per-level geometry and table layout, computed exactly as tiny-cuda-nn does.

    Attributes:
        base_resolution: tcnn ``base_resolution`` (vertices per axis of level 0, an integer).
        per_level_scale: tcnn ``per_level_scale`` (growth factor between levels).
        scales: ``(L,)`` float32 ``grid_scale`` of each level (cells per unit length).
        resolutions: ``(L,)`` ``grid_resolution`` = ``ceil(scale) + 1``.
        sizes: ``(L,)`` table entries of each level (``params_in_level``).
        offsets: ``(L + 1,)`` first entry of each level in the flat table; ``offsets[-1]`` is
            the number of entries.
        hashed: ``(L,)`` True where the level uses the spatial hash, False where dense.
        n_features: features per entry (``features_per_level``).
    """

    base_resolution: int
    per_level_scale: float
    scales: tuple[float, ...]
    resolutions: tuple[int, ...]
    sizes: tuple[int, ...]
    offsets: tuple[int, ...]
    hashed: tuple[bool, ...]
    n_features: int

    @property
    def n_levels(self) -> int:
        return len(self.scales)

    @property
    def n_entries(self) -> int:
        return self.offsets[-1]

    @property
    def n_params(self) -> int:
        """Length of the flat parameter vector (tcnn ``n_params``)."""
        return self.offsets[-1] * self.n_features

    @staticmethod
    def from_config(cfg: HashGridConfig) -> "HashGridLayout":
        """Derive tcnn's parameters from cell sizes in metres and lay out the table.

        ``base_resolution = round(cube / coarsest_cell)``; ``per_level_scale`` makes the
        level resolutions (tcnn's ``base_resolution * per_level_scale**l``) grow
        geometrically to ``cube / finest_cell``. A level's cell is ``cube / scale_l`` metres,
        ``scale_l`` being that resolution minus one (tcnn counts vertices, not cells).

        Raises:
            ConfigError: if the sizes are inconsistent (naming the offending key).
        """
        validate_fields(cfg)  # types and ranges declared with param()
        cube = 2.0 * cfg.half_extent_m
        if cfg.finest_cell_m > cfg.coarsest_cell_m:
            raise ConfigError(f"parameter 'finest_cell_m' ({cfg.finest_cell_m}) must be <= "
                              f"'coarsest_cell_m' ({cfg.coarsest_cell_m})")
        base_resolution = int(round(cube / cfg.coarsest_cell_m))
        if base_resolution < 2:
            raise ConfigError(f"parameter 'coarsest_cell_m' ({cfg.coarsest_cell_m}) is too large "
                              f"for the cube of edge 2 * half_extent_m = {cube} m: the coarsest "
                              f"level needs at least 2 vertices per axis")
        if cfg.n_levels > 1:
            finest_resolution = cube / cfg.finest_cell_m
            per_level_scale = math.exp(math.log(finest_resolution / base_resolution)
                                       / (cfg.n_levels - 1))
            per_level_scale = max(per_level_scale, 1.0)
        else:
            per_level_scale = 1.0
        return HashGridLayout.from_tcnn(cfg.n_levels, cfg.features_per_level,
                                        cfg.log2_hashmap_size, base_resolution, per_level_scale)

    @staticmethod
    def from_tcnn(n_levels: int, n_features: int, log2_hashmap_size: int,
                  base_resolution: int, per_level_scale: float) -> "HashGridLayout":
        """The layout of a tcnn HashGrid given its own hyper-parameters.

        Follows ``GridEncodingTemplated``'s constructor, ``grid_scale`` and
        ``grid_resolution`` in float32, and ``grid_index``'s dense-or-hash decision.
        """
        f32 = np.float32
        # tcnn stores per_level_scale as a float and takes std::log2 of it (log2f).
        log2_scale = f32(math.log2(float(f32(per_level_scale))))
        table_size = 1 << log2_hashmap_size
        scales, resolutions, sizes, offsets, hashed = [], [], [], [0], []
        for level in range(n_levels):
            with np.errstate(over="ignore"):
                scale = f32(np.exp2(f32(level) * log2_scale)) * f32(base_resolution) - f32(1.0)
            resolution = int(math.ceil(float(scale))) + 1
            dense = resolution ** 3
            params_in_level = min(dense, _UINT32_MAX // 2)
            params_in_level = min(_next_multiple(params_in_level, _LEVEL_ALIGNMENT), table_size)
            # grid_index: hash iff hashmap_size < stride (stride saturates for huge grids).
            stride = dense if resolution <= _MAX_DENSE_BASE_3D else _UINT32_MAX
            scales.append(float(scale))
            resolutions.append(resolution)
            sizes.append(params_in_level)
            hashed.append(params_in_level < stride)
            # a hashed level's table is the full 2^log2_hashmap_size: its modulo is a mask
            assert not hashed[-1] or params_in_level == table_size
            offsets.append(offsets[-1] + params_in_level)
        return HashGridLayout(base_resolution, float(f32(per_level_scale)), tuple(scales),
                              tuple(resolutions), tuple(sizes), tuple(offsets), tuple(hashed),
                              n_features)

    def tcnn_config(self, log2_hashmap_size: int) -> dict[str, Any]:
        """The ``encoding_config`` that makes ``tcnn.Encoding(3, ...)`` use this layout."""
        return {
            "otype": "HashGrid",
            "n_levels": self.n_levels,
            "n_features_per_level": self.n_features,
            "log2_hashmap_size": log2_hashmap_size,
            "base_resolution": self.base_resolution,
            "per_level_scale": self.per_level_scale,
            "interpolation": "Linear",
            "hash": "CoherentPrime",  # the default; named so a changed default cannot bite
        }


# --------------------------------------------------------------------------- shared base


class _CubeEncoding(nn.Module):
    """What both backends share: the config, the layout and the cube normalisation."""

    def __init__(self, cfg: HashGridConfig, center: Sequence[float]) -> None:
        super().__init__()
        center_t = torch.as_tensor(np.asarray(center, dtype=np.float64).reshape(3),
                                   dtype=torch.float32)
        self.cfg = cfg
        self.layout = HashGridLayout.from_config(cfg)
        # A buffer, so that a saved map restores the frame it was encoded in.
        self.register_buffer("center", center_t.clone())

    @property
    def output_dim(self) -> int:
        """Number of output features, ``n_levels * features_per_level``."""
        return self.layout.n_levels * self.layout.n_features

    @property
    def n_params(self) -> int:
        return self.layout.n_params

    def _offset(self, x: Tensor) -> Tensor:
        """``x - center``, in float64 when ``x`` is (far from the origin, float32 would
        lose millimetres before the subtraction)."""
        dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
        return x.to(dtype) - self.center.to(dtype)

    def normalize(self, x: Tensor) -> Tensor:
        """World metres ``(..., 3)`` -> unit-cube coordinates ``(..., 3)`` float32.

        Clamped to ``[0, 1]``: points outside the cube (including +-inf) take the features
        of the nearest surface point; NaN stays NaN (and so do its features).
        """
        u = self._offset(x) * (1.0 / (2.0 * self.cfg.half_extent_m)) + 0.5
        return u.to(torch.float32).clamp_(0.0, 1.0)

    def contains(self, x: Tensor) -> Tensor:
        """``(...,)`` bool: the points ``(..., 3)`` lie inside the encoded cube."""
        return (self._offset(x).abs() <= self.cfg.half_extent_m).all(-1)

    def extra_repr(self) -> str:
        lay = self.layout
        return (f"levels={lay.n_levels}, features={lay.n_features}, "
                f"T=2^{self.cfg.log2_hashmap_size}, base_resolution={lay.base_resolution}, "
                f"per_level_scale={lay.per_level_scale:.5f}, n_params={lay.n_params}, "
                f"center={tuple(round(c, 4) for c in self.center.tolist())}, "
                f"half_extent_m={self.cfg.half_extent_m}")


# --------------------------------------------------------------------------- reference


def _gather_rows(table: Tensor, rows: Tensor) -> Tensor:
    """``table[rows]`` for an ``(E, F)`` table and ``(M,)`` int32/int64 rows -> ``(M, F)``.

    A row of 4 or 8 bytes is gathered as one integer: a 1-D ``index_select`` is several
    times faster on the CPU than a row-wise 2-D one, and an integer copy keeps the bits.
    """
    row_bytes = table.shape[1] * table.element_size()
    as_int = {4: torch.int32, 8: torch.int64}.get(row_bytes)
    if as_int is None or not table.is_contiguous():
        return table.index_select(0, rows)
    flat = table.view(as_int).view(-1)
    return flat.index_select(0, rows).view(table.dtype).view(-1, table.shape[1])


class _HashGridFunction(torch.autograd.Function):
    """The encoding's table lookup, with a hand-written backward.

    forward(params (P,), u (3, N) float64 unit-cube positions, encoding) -> (L, F, N):
    ``out[l, :, n] = sum_c w[l, c, n] * table_l[rows[l, c, n]]`` (``kernel_grid``).
    backward: ``grad_table_l[rows] += w * grad_out`` with ``index_add_``
    (``kernel_grid_backward``); no autograd graph is built through the gather (recording
    one costs more than the gather itself), and there is no gradient for ``u``.

    Both directions work one level at a time and recompute the level's vertex rows and
    weights rather than keeping them for all levels: the level's table slice stays in the
    CPU cache (tcnn organises its kernels per level for the same reason), and every
    temporary stays a few MB, which the allocator reuses. Keeping (L, 8, N) rows and
    weights alive between forward and backward (50 MB at 65536 points) made the kernel
    map fresh pages on every call: page faults cost more than computing the corners twice.
    """

    @staticmethod
    def forward(ctx: Any, params: Tensor, u: Tensor,  # type: ignore[override]
                enc: "HashGridEncoding") -> Tensor:
        lay = enc.layout
        n = u.shape[1]
        out = torch.empty(lay.n_levels, lay.n_features, n, dtype=params.dtype,
                          device=params.device)
        table = params.view(-1, lay.n_features)
        for level in range(lay.n_levels):
            rows, weights = enc._level_corners(u, level)  # (8, N) each, rows level-local
            level_table = table[lay.offsets[level]:lay.offsets[level + 1]]
            feats = _gather_rows(level_table, rows.view(-1))  # (8 N, F), F interleaved
            # As planes (F, 8, N): the weighting then runs along contiguous N instead of
            # broadcasting each weight over F = 2 interleaved values (2x slower).
            planes = feats.t().reshape(lay.n_features, 8, n)
            planes.mul_(weights.to(planes.dtype))
            torch.sum(planes, dim=1, out=out[level])
        ctx.save_for_backward(u)
        ctx.enc = enc
        ctx.param_shape = (params.shape, params.dtype, params.device)
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, grad_out: Tensor) -> tuple[Tensor | None, None, None]:
        if not ctx.needs_input_grad[0]:
            return None, None, None
        (u,) = ctx.saved_tensors
        enc: HashGridEncoding = ctx.enc
        lay = enc.layout
        shape, dtype, device = ctx.param_shape
        grad_planes = grad_out.to(dtype).contiguous()  # (L, F, N)
        # One plane per feature: a 1-D index_add_ is ~7x faster on the CPU than index_add_
        # of (M, F) rows into an (E, F) table, and it takes int32 indices as they are.
        grad = torch.zeros(lay.n_features, lay.n_entries, dtype=dtype, device=device)
        for level in range(lay.n_levels):
            rows, weights = enc._level_corners(u, level)
            rows = rows.view(-1)
            for k in range(lay.n_features):
                contrib = weights.to(dtype) * grad_planes[level, k].unsqueeze(0)  # (8, N)
                grad[k, lay.offsets[level]:lay.offsets[level + 1]].index_add_(
                    0, rows, contrib.view(-1))
        return grad.t().reshape(shape), None, None


class HashGridEncoding(_CubeEncoding):
    """Plain-PyTorch multiresolution hash grid, tiny-cuda-nn ``HashGrid`` semantics.

    Args:
        cfg: sizes of the grid (see :class:`HashGridConfig`).
        center: ``(3,)`` world coordinates, metres, of the centre of the encoded cube; the
            mapper takes it from the first frame's data (:func:`center_from_points`).

    Attributes:
        params: ``(n_params,)`` flat trainable table in tcnn's layout.
        center: ``(3,)`` float32 buffer.
    """

    def __init__(self, cfg: HashGridConfig | None = None,
                 center: Sequence[float] = (0.0, 0.0, 0.0)) -> None:
        super().__init__(cfg if cfg is not None else HashGridConfig(), center)
        lay = self.layout
        if lay.n_entries >= 2**31:
            raise ConfigError(f"hash grid of {lay.n_entries} entries exceeds int32 indexing")
        self.params = nn.Parameter(torch.empty(lay.n_params).uniform_(-self.cfg.init_scale,
                                                                      self.cfg.init_scale))
        # Per level and dimension, the factor of a vertex coordinate in its table index:
        # dense levels the strides (1, r, r^2) of i + j r + k r^2; hashed levels
        # coherent_prime_hash's uint32 primes as int32 with the same bits (an int32
        # product wraps modulo 2^32 exactly like tcnn's uint32 one).
        primes = [p - (1 << 32) if p >= 1 << 31 else p for p in HASH_PRIMES]
        factors = [[1, r, r * r] if not hashed else primes
                   for r, hashed in zip(lay.resolutions, lay.hashed)]
        self.register_buffer("_factors", torch.tensor(factors, dtype=torch.int32).unsqueeze(-1),
                             persistent=False)  # (L, 3, 1)
        self._warned_input_grad = False

    # ---------------------------------------------------------------- lookup

    def _unit_positions(self, x: Tensor) -> Tensor:
        """World ``(..., 3)`` -> ``(3, N)`` float64 unit-cube coordinates (float32 values)."""
        return self.normalize(x.reshape(-1, 3)).t().to(torch.float64).contiguous()

    def _level_corners(self, u: Tensor, level: int) -> tuple[Tensor, Tensor]:
        """The 8 vertices of each point's cell at one level.

        Args:
            u: ``(3, N)`` float64 unit-cube coordinates (float32 values).
            level: grid level.

        Returns:
            rows: ``(8, N)`` int32 entries of the level's table slice (``grid_index``).
            weights: ``(8, N)`` float32 trilinear weights.
            Corner ``c`` is vertex ``pos_grid + ((c >> 0) & 1, (c >> 1) & 1, (c >> 2) & 1)``,
            ``kernel_grid``'s order.
        """
        lay = self.layout
        # pos_fract: fmaf(scale, u, 0.5) rounds once; in float64 the product is exact, so
        # rounding the sum to float32 reproduces it (float32 ops would round twice).
        pos = (u * lay.scales[level]).add_(0.5).float()  # (3, N)
        floor = pos.floor()
        frac = pos.sub_(floor)
        factors = self._factors[level]  # (3, 1)
        lower = floor.to(torch.int32).mul_(factors)  # (3, N) index terms of the lower vertex
        upper = lower + factors  # (p + 1) f = p f + f, also modulo 2^32
        hashed = lay.hashed[level]
        if hashed:  # masking each term first equals masking their XOR (T is a power of 2)
            mask = lay.sizes[level] - 1
            lower.bitwise_and_(mask)
            upper.bitwise_and_(mask)
        combine = torch.bitwise_xor if hashed else torch.add
        n = u.shape[1]
        rows = torch.empty(8, n, dtype=torch.int32, device=u.device)
        weights = torch.empty(8, n, dtype=torch.float32, device=u.device)
        ends = ((lower, 1.0 - frac), (upper, frac))
        for hi in (0, 1):
            for mid in (0, 1):
                # dims 2 and 1 first: shared by the two corners that differ in dim 0
                t21 = combine(ends[hi][0][2], ends[mid][0][1])
                w21 = ends[hi][1][2] * ends[mid][1][1]
                for lo in (0, 1):
                    c = lo | (mid << 1) | (hi << 2)
                    combine(t21, ends[lo][0][0], out=rows[c])
                    torch.mul(w21, ends[lo][1][0], out=weights[c])
        if not hashed:  # indices past the grid's far edge wrap, as tcnn's modulo does
            rows = torch.remainder(rows, lay.sizes[level])
        return rows, weights

    def corners(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Table rows and trilinear weights of the 8 cell vertices at every level.

        Args:
            x: ``(N, 3)`` world positions, metres.

        Returns:
            rows: ``(L, 8, N)`` int32 entry indices into ``params.view(-1, F)``, level
                offsets included (``grid_index``); corner order as in :meth:`_level_corners`.
            weights: ``(L, 8, N)`` float32 trilinear weights, summing to 1 over corners.
        """
        with torch.no_grad():
            u = self._unit_positions(x)
            rows, weights = zip(*(self._level_corners(u, level)
                                  for level in range(self.layout.n_levels)))
            offsets = torch.tensor(self.layout.offsets[:-1], dtype=torch.int32,
                                   device=u.device)
            return torch.stack(rows) + offsets.view(-1, 1, 1), torch.stack(weights)

    # ---------------------------------------------------------------- forward

    def forward(self, x: Tensor) -> Tensor:
        """Encode positions.

        Args:
            x: ``(..., 3)`` world positions in metres (any float dtype; used as float32).

        Returns:
            ``(..., n_levels * features_per_level)`` features in the table's dtype;
            column ``l * F + f`` is feature ``f`` of level ``l`` (tcnn's order).
        """
        if x.shape[-1] != 3:
            raise ValueError(f"expected positions of shape (..., 3), got {tuple(x.shape)}")
        if x.requires_grad and not self._warned_input_grad:
            self._warned_input_grad = True
            warnings.warn("HashGridEncoding computes no gradient with respect to positions",
                          stacklevel=2)
        lead = x.shape[:-1]
        with torch.no_grad():
            u = self._unit_positions(x)
        out = _HashGridFunction.apply(self.params, u, self)  # (L, F, N)
        return out.permute(2, 0, 1).reshape(*lead, self.output_dim)


# --------------------------------------------------------------------------- tcnn backend


def _import_tcnn() -> Any:
    """Import tinycudann lazily; raises ImportError with the reason when it cannot be used."""
    try:
        import tinycudann  # noqa: PLC0415  (optional CUDA backend, imported on demand)
    except Exception as exc:  # its import raises EnvironmentError without a CUDA device
        raise ImportError(f"tinycudann cannot be imported: {type(exc).__name__}: {exc}") from exc
    return tinycudann


def tcnn_unavailable_reason(device: torch.device | str = "cuda") -> str | None:
    """None if the tcnn backend can run on ``device``, else why not (for logs and skips)."""
    device = torch.device(device)
    if device.type != "cuda":
        return f"device is {device.type}, tinycudann needs CUDA"
    if not torch.cuda.is_available():
        return "CUDA is not available to torch"
    try:
        _import_tcnn()
    except ImportError as exc:
        return str(exc)
    return None


class TcnnHashGridEncoding(_CubeEncoding):
    """``tinycudann.Encoding`` HashGrid with the same config, cube and parameters.

    Args:
        cfg, center: as for :class:`HashGridEncoding`.
        device: a CUDA device.
        dtype: tcnn's parameter and output precision; float32 (default) matches the
            reference, float16 is faster. Outputs are returned as float32 either way.

    Attributes:
        params: ``(n_params,)`` the tcnn module's own flat parameter (same layout as the
            reference's, registered here under the same name so ``state_dict`` s match).

    Raises:
        ImportError: tinycudann is missing or unusable.
        RuntimeError: tcnn's table size differs from :class:`HashGridLayout`'s.
    """

    def __init__(self, cfg: HashGridConfig | None = None,
                 center: Sequence[float] = (0.0, 0.0, 0.0),
                 device: torch.device | str = "cuda",
                 dtype: torch.dtype = torch.float32) -> None:
        super().__init__(cfg if cfg is not None else HashGridConfig(), center)
        tcnn = _import_tcnn()
        device = torch.device(device)
        # tcnn allocates on the current CUDA device (a CPU device only occurs in tests
        # that stand in a fake module for tinycudann)
        on_device = torch.cuda.device(device) if device.type == "cuda" else nullcontext()
        with on_device:
            encoding = tcnn.Encoding(3, self.layout.tcnn_config(self.cfg.log2_hashmap_size),
                                     dtype=dtype)
        if encoding.params.numel() != self.layout.n_params:
            raise RuntimeError(f"tinycudann allocated {encoding.params.numel()} parameters, "
                               f"the reference layout has {self.layout.n_params}")
        if encoding.n_output_dims != self.output_dim:
            raise RuntimeError(f"tinycudann encodes to {encoding.n_output_dims} features, "
                               f"expected {self.output_dim}")
        with torch.no_grad():  # tcnn's init is uniform(-1e-4, 1e-4); honour init_scale
            encoding.params.uniform_(-self.cfg.init_scale, self.cfg.init_scale)
        # Not a submodule: its parameter is registered as ours, so the state_dict keys are
        # those of the reference ("params", "center") and checkpoints move between backends.
        object.__setattr__(self, "_tcnn", encoding)
        self.params = encoding.params
        self.to(device)

    def forward(self, x: Tensor) -> Tensor:
        """``(..., 3)`` world metres -> ``(..., output_dim)`` float32 (see the reference)."""
        if x.shape[-1] != 3:
            raise ValueError(f"expected positions of shape (..., 3), got {tuple(x.shape)}")
        lead = x.shape[:-1]
        u = self.normalize(x.reshape(-1, 3)).contiguous()
        out = self._tcnn(u).float()
        return out.reshape(*lead, self.output_dim)


def make_hash_grid(cfg: HashGridConfig | None = None,
                   center: Sequence[float] = (0.0, 0.0, 0.0),
                   device: torch.device | str = "cpu") -> nn.Module:
    """The tcnn encoding when tinycudann is importable and ``device`` is CUDA, else the
    reference; logs which one and why."""
    cfg = cfg if cfg is not None else HashGridConfig()
    device = torch.device(device)
    reason = tcnn_unavailable_reason(device)
    if reason is None:
        try:
            module = TcnnHashGridEncoding(cfg, center, device)
            _log.info("hash grid: tiny-cuda-nn backend on %s (%d parameters)", device,
                      module.n_params)
            return module
        except (ImportError, RuntimeError) as exc:
            reason = f"tinycudann failed: {exc}"
    module = HashGridEncoding(cfg, center).to(device)
    _log.info("hash grid: plain-PyTorch reference on %s (%s; %d parameters)", device, reason,
              module.n_params)
    return module


def center_from_points(points: Tensor | np.ndarray) -> tuple[float, float, float]:
    """A cube centre from a frame's 3-D points ``(N, 3)`` (metres): their median.

    The median ignores far outliers (sky, depth noise) that would shift a mean.
    """
    pts = torch.as_tensor(np.asarray(points) if not isinstance(points, Tensor) else points)
    pts = pts.reshape(-1, 3).to(torch.float64)
    pts = pts[torch.isfinite(pts).all(-1)]
    if pts.shape[0] == 0:
        raise ValueError("center_from_points: no finite point")
    med = pts.median(0).values
    return (float(med[0]), float(med[1]), float(med[2]))


# --------------------------------------------------------------------------- benchmark


def _ray_samples(n_rays: int, n_samples: int, extent_m: float, generator: torch.Generator,
                 device: torch.device) -> Tensor:
    """``(n_rays * n_samples, 3)`` points along rays from one camera into a scene of
    ``extent_m``, most of them near the surface (as a depth-guided sampler places them)."""
    origin = torch.tensor([0.0, -1.5 * extent_m, 0.5 * extent_m])
    target = (torch.rand(n_rays, 3, generator=generator) - 0.5) * extent_m
    dirs = target - origin
    depth = dirs.norm(dim=-1, keepdim=True)
    dirs = dirs / depth
    n_near = (3 * n_samples) // 4
    t_far = torch.rand(n_rays, n_samples - n_near, generator=generator) * depth
    t_near = depth + (torch.rand(n_rays, n_near, generator=generator) - 0.5) * 0.08
    t = torch.cat((t_far, t_near), 1).sort(1).values
    return (origin + dirs[:, None, :] * t[..., None]).reshape(-1, 3).to(device)


def benchmark_encoding(n_points: int = 65536, device: str | torch.device = "cpu", *,
                       cfg: HashGridConfig | None = None, samples_per_ray: int | None = None,
                       extent_m: float = 1.0, repeats: int = 5, threads: int | None = None,
                       seed: int = 0) -> dict[str, float]:
    """Time the reference encoding: forward, and forward + backward into the table.

    Args:
        n_points: points per call.
        device: torch device.
        cfg: grid configuration (default :class:`HashGridConfig`).
        samples_per_ray: if given, points lie along ``n_points // samples_per_ray`` camera
            rays (3/4 within +-4 cm of the surface); else uniform in a cube of ``extent_m``.
        extent_m: edge of the region the points occupy (a table-top scene by default; the
            encoded cube itself is ``2 * half_extent_m``).
        repeats: timed calls; the minimum is reported (the machine may be shared).
        threads: torch CPU threads during the run (restored after); None keeps the setting.

    Returns:
        ``{"n_points", "forward_ms", "forward_backward_ms", "points_per_s", "threads"}``;
        times are the minimum over ``repeats`` after one warm-up call.
    """
    device = torch.device(device)
    gen = torch.Generator().manual_seed(seed)
    if samples_per_ray:
        x = _ray_samples(n_points // samples_per_ray, samples_per_ray, extent_m, gen, device)
    else:
        x = ((torch.rand(n_points, 3, generator=gen) - 0.5) * extent_m).to(device)
    enc = HashGridEncoding(cfg or HashGridConfig()).to(device)
    grad_seed = torch.randn(x.shape[0], enc.output_dim, generator=gen).to(device)

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    def fwd() -> None:
        with torch.no_grad():
            enc(x)
        sync()

    def fwd_bwd() -> None:
        enc.params.grad = None
        (enc(x) * grad_seed).sum().backward()
        sync()

    def best_ms(fn: Any) -> float:
        fn()
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        return 1e3 * min(times)

    previous_threads = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        forward_ms = best_ms(fwd)
        forward_backward_ms = best_ms(fwd_bwd)
        used_threads = torch.get_num_threads()
    finally:
        torch.set_num_threads(previous_threads)
    return {"n_points": float(x.shape[0]), "forward_ms": forward_ms,
            "forward_backward_ms": forward_backward_ms,
            "points_per_s": x.shape[0] / (forward_backward_ms * 1e-3),
            "threads": float(used_threads)}


def _main() -> None:
    """``python -m panoptic_mapping.core.field.encoding``: print the CPU benchmark."""
    for threads in sorted({1, torch.get_num_threads()}):
        for label, kwargs in (("65536 points uniform in 1 m^3", {}),
                              ("4096 rays x 16 samples", {"samples_per_ray": 16})):
            r = benchmark_encoding(65536, threads=threads, repeats=7, **kwargs)
            print(f"{label}, {threads} thread(s): forward {r['forward_ms']:.1f} ms, "
                  f"forward+backward {r['forward_backward_ms']:.1f} ms "
                  f"({r['points_per_s']:.0f} points/s)")


if __name__ == "__main__":
    _main()
