"""Hash-grid encoding: tiny-cuda-nn semantics, worked examples, gradients, tcnn agreement."""
from __future__ import annotations

import dataclasses
import logging
import math

import numpy as np
import pytest
import torch

from panoptic_mapping.config import ConfigError, param_specs
from panoptic_mapping.core.field.encoding import (
    HashGridConfig,
    HashGridEncoding,
    HashGridLayout,
    TcnnHashGridEncoding,
    _HashGridFunction,
    benchmark_encoding,
    center_from_points,
    make_hash_grid,
    tcnn_unavailable_reason,
)

# One dense level of 5 x 5 x 5 vertices: cube edge 2.5 m, cell 0.5 m -> base_resolution 5,
# scale 4, so u -> pos = 4 u + 0.5 with exact binary fractions for the points used below.
ONE_LEVEL = HashGridConfig(n_levels=1, half_extent_m=1.25, coarsest_cell_m=0.5,
                           finest_cell_m=0.5)
# Three dense levels (8^3, 16^3, 32^3 vertices) and, with T = 2^12, one hashed level.
SMALL = HashGridConfig(n_levels=4, half_extent_m=1.0, coarsest_cell_m=0.25,
                       finest_cell_m=2.0 / 64, log2_hashmap_size=12)


def _world_from_unit(u: np.ndarray, cfg: HashGridConfig, center=(0.0, 0.0, 0.0)) -> torch.Tensor:
    return torch.tensor((np.asarray(u) - 0.5) * 2 * cfg.half_extent_m + np.asarray(center),
                        dtype=torch.float32)


def _set_table(enc: HashGridEncoding, fn) -> None:
    """params[entry, f] = fn(i, j, k, f) for the dense single level of ``enc``."""
    r = enc.layout.resolutions[0]
    table = torch.zeros(enc.layout.n_entries, enc.layout.n_features)
    for i in range(r):
        for j in range(r):
            for k in range(r):
                for f in range(enc.layout.n_features):
                    table[i + j * r + k * r * r, f] = fn(i, j, k, f)
    with torch.no_grad():
        enc.params.copy_(table.view(-1))


# --------------------------------------------------------------------------- configuration


def test_config_fields_are_documented_with_the_requested_defaults():
    specs = {s.name: s for s in param_specs(HashGridConfig)}
    assert set(specs) == {"n_levels", "features_per_level", "log2_hashmap_size",
                          "coarsest_cell_m", "finest_cell_m", "half_extent_m", "init_scale"}
    assert all(s.doc for s in specs.values())
    cfg = HashGridConfig()
    assert (cfg.n_levels, cfg.features_per_level, cfg.log2_hashmap_size) == (12, 2, 15)
    assert (cfg.coarsest_cell_m, cfg.finest_cell_m, cfg.half_extent_m, cfg.init_scale) == (
        0.5, 0.01, 64.0, 1e-4)
    assert "19" in specs["log2_hashmap_size"].doc


@pytest.mark.parametrize("change, key", [
    ({"finest_cell_m": 0.6}, "finest_cell_m"),
    ({"coarsest_cell_m": 200.0, "finest_cell_m": 100.0}, "coarsest_cell_m"),
    ({"features_per_level": 3}, "features_per_level"),
    ({"n_levels": 0}, "n_levels"),
])
def test_inconsistent_config_is_rejected_naming_the_key(change, key):
    with pytest.raises(ConfigError, match=key):
        HashGridEncoding(dataclasses.replace(HashGridConfig(), **change))


# --------------------------------------------------------------------------- layout


def test_default_layout_matches_hand_computed_tcnn_parameters():
    lay = HashGridLayout.from_config(HashGridConfig())
    assert lay.base_resolution == 256  # 128 m cube / 0.5 m
    assert lay.per_level_scale == pytest.approx((12800 / 256) ** (1 / 11), rel=1e-6)
    assert lay.scales[0] == 255.0 and lay.resolutions[0] == 256
    assert lay.resolutions[-1] == 12800  # 128 m / 0.01 m (scale 12799 up to float32)
    assert all(lay.hashed) and lay.sizes == (2**15,) * 12  # 256^3 > 2^15 already
    assert lay.n_params == 12 * 2**15 * 2
    enc = HashGridEncoding()
    assert enc.params.shape == (lay.n_params,) and enc.output_dim == 24


def test_dense_levels_use_aligned_dense_sizes_and_fine_levels_hash():
    lay = HashGridLayout.from_config(SMALL)
    assert lay.base_resolution == 8 and lay.per_level_scale == pytest.approx(2.0)
    assert lay.scales == (7.0, 15.0, 31.0, 63.0)
    assert lay.resolutions == (8, 16, 32, 64)
    # next_multiple(r^3, 8), capped at T = 4096; 16^3 = 4096 still fits (dense).
    assert lay.sizes == (512, 4096, 4096, 4096)
    assert lay.hashed == (False, False, True, True)
    assert lay.offsets == (0, 512, 4608, 8704, 12800)
    cfg = lay.tcnn_config(12)
    assert cfg["otype"] == "HashGrid" and cfg["base_resolution"] == 8
    assert cfg["interpolation"] == "Linear" and cfg["n_levels"] == 4


# --------------------------------------------------------------------------- worked examples


def test_trilinear_interpolation_worked_example():
    enc = HashGridEncoding(ONE_LEVEL)
    assert enc.layout.resolutions == (5,) and enc.layout.scales == (4.0,)
    assert not enc.layout.hashed[0] and enc.layout.sizes == (128,)
    # feature 0: a single vertex (2, 2, 1) set to 1; feature 1: the linear i + 10 j + 100 k
    _set_table(enc, lambda i, j, k, f: float((i, j, k) == (2, 2, 1)) if f == 0
               else i + 10.0 * j + 100.0 * k)
    # u = (0.3, 0.4375, 0.25) -> pos = 4u + 0.5 = (1.7, 2.25, 1.5): cell (1, 2, 1),
    # fractions (0.7, 0.25, 0.5). Vertex (2, 2, 1) is the cell's upper x, lower y, lower z.
    x = _world_from_unit([[0.3, 0.4375, 0.25]], ONE_LEVEL)
    out = enc(x)
    assert out.shape == (1, 2)
    assert out[0, 0].item() == pytest.approx(0.7 * 0.75 * 0.5, abs=1e-6)  # 0.2625
    # trilinear interpolation reproduces a linear function exactly: 1.7 + 22.5 + 150
    assert out[0, 1].item() == pytest.approx(174.2, abs=1e-4)


def test_point_on_a_vertex_returns_that_vertex_feature():
    enc = HashGridEncoding(ONE_LEVEL)
    _set_table(enc, lambda i, j, k, f: (i + 5 * j + 25 * k) * (1 if f == 0 else -1) + 0.5 * f)
    # u = 0.375 -> pos = 2.0 exactly: vertex (2, 2, 2) with weight 1.
    x = _world_from_unit([[0.375, 0.375, 0.375]], ONE_LEVEL)
    rows, weights = enc.corners(x)
    assert weights[0, 0, 0].item() == 1.0 and weights[0, 1:].sum().item() == 0.0
    assert enc(x)[0].tolist() == [62.0, -61.5]  # 2 + 10 + 50


def test_output_is_continuous_across_a_cell_boundary():
    torch.manual_seed(0)
    enc = HashGridEncoding(SMALL)
    with torch.no_grad():
        enc.params.uniform_(-1, 1)
    # u_x = 0.5 is a cell boundary of level 0 (pos = 7 * 0.5 + 0.5 = 4).
    eps = 1e-5
    x = _world_from_unit([[0.5 - eps, 0.31, 0.62], [0.5 + eps, 0.31, 0.62]], SMALL)
    rows, _ = enc.corners(x)
    assert not torch.equal(rows[0, :, 0], rows[0, :, 1])  # the two points are in other cells
    out = enc(x)
    # features change by at most |slope| * distance: 4 levels, cells >= 1/63 of the cube
    assert (out[0] - out[1]).abs().max().item() < 1e-2


def test_weights_are_a_partition_of_unity_and_rows_stay_in_the_table():
    enc = HashGridEncoding(SMALL, center=(1.0, -2.0, 0.5))
    x = torch.randn(500, 3) * 2.0 + torch.tensor([1.0, -2.0, 0.5])
    rows, weights = enc.corners(x)
    assert rows.shape == (4, 8, 500) and rows.dtype == torch.int32
    torch.testing.assert_close(weights.sum(1), torch.ones(4, 500))
    offsets = torch.tensor(enc.layout.offsets)
    for level in range(4):
        assert rows[level].min() >= offsets[level] and rows[level].max() < offsets[level + 1]


# --------------------------------------------------------------------------- tcnn's hash


def _tcnn_grid_index_py(pos_grid: tuple[int, int, int], resolution: int,
                        hashmap_size: int, hashed_type: bool = True) -> int:
    """A line-by-line Python transcription of tiny-cuda-nn's ``grid_index`` (uint32)."""
    mask32 = 0xFFFFFFFF
    stride, index = 1, 0
    if resolution <= 0x659:  # MAX_BASES[3]
        for dim in range(3):
            index = (index + pos_grid[dim] * stride) & mask32
            stride = (stride * resolution) & mask32
    else:
        stride = mask32
    if hashed_type and hashmap_size < stride:
        primes = (1, 2654435761, 805459861)  # coherent_prime_hash
        index = 0
        for dim in range(3):
            index ^= (pos_grid[dim] * primes[dim]) & mask32
    return index % hashmap_size


def _tcnn_scale_py(level: int, base_resolution: int, per_level_scale: float) -> np.float32:
    """``grid_scale`` in float32: exp2f(level * log2f(per_level_scale)) * base - 1."""
    log2s = np.float32(math.log2(float(np.float32(per_level_scale))))
    return np.float32(np.float32(np.exp2(np.float32(level) * log2s)) * np.float32(base_resolution)
                      - np.float32(1.0))


def _tcnn_vertices_py(u: np.ndarray, level: int, lay: HashGridLayout):
    """``kernel_grid`` for one point ``u`` (3,) and level: [(entry, weight)] of 8 corners."""
    scale = _tcnn_scale_py(level, lay.base_resolution, lay.per_level_scale)
    assert scale == np.float32(lay.scales[level])
    resolution = int(math.ceil(float(scale))) + 1
    assert resolution == lay.resolutions[level]
    # pos_fract: fmaf(scale, u, 0.5) rounded once to float32, floor, fraction
    pos = [np.float32(float(scale) * float(u[d]) + 0.5) for d in range(3)]
    grid = [int(math.floor(p)) for p in pos]
    frac = [float(p) - g for p, g in zip(pos, grid)]
    corners = []
    for c in range(8):
        bits = [(c >> d) & 1 for d in range(3)]
        vertex = tuple(g + b for g, b in zip(grid, bits))
        entry = lay.offsets[level] + _tcnn_grid_index_py(vertex, resolution, lay.sizes[level])
        corners.append((entry, math.prod(f if b else 1 - f for f, b in zip(frac, bits))))
    return corners


def _tcnn_encode_py(u: torch.Tensor, params: torch.Tensor, lay: HashGridLayout) -> torch.Tensor:
    """tcnn's HashGrid forward, point by point in Python: ``(N, 3)`` unit cube -> ``(N, L F)``.

    Differentiable in ``params`` (plain indexing)."""
    table = params.view(-1, lay.n_features)
    u64 = u.double().numpy()
    out = []
    for n in range(u.shape[0]):
        per_level = []
        for level in range(lay.n_levels):
            corners = _tcnn_vertices_py(u64[n], level, lay)
            per_level.append(sum(table[e] * w for e, w in corners))
        out.append(torch.cat(per_level))
    return torch.stack(out).float()


@pytest.mark.parametrize("cfg", [HashGridConfig(), SMALL], ids=["default", "small"])
def test_rows_match_a_python_transcription_of_tcnn_grid_index(cfg):
    enc = HashGridEncoding(cfg, center=(0.3, -0.2, 1.0))
    gen = torch.Generator().manual_seed(1)
    x = (torch.rand(6, 3, generator=gen) - 0.5) * 3.0 + torch.tensor([0.3, -0.2, 1.0])
    x[0] = torch.tensor([1e3, -1e3, 1e3])  # clamped to a cube corner: u = 1 or 0 exactly
    rows, weights = enc.corners(x)
    u = enc.normalize(x).double().numpy()
    for level in range(enc.layout.n_levels):
        for n in range(x.shape[0]):
            for c, (entry, w) in enumerate(_tcnn_vertices_py(u[n], level, enc.layout)):
                assert rows[level, c, n].item() == entry, (level, n, c)
                assert weights[level, c, n].item() == pytest.approx(w, abs=1e-6)


def test_int32_hash_wraps_like_uint32():
    # Large vertex coordinates overflow 32 bits in the products: the int32 arithmetic must
    # still give tcnn's uint32 result.
    cfg = HashGridConfig(n_levels=2, half_extent_m=64.0, coarsest_cell_m=0.02,
                         finest_cell_m=0.002, log2_hashmap_size=19)
    enc = HashGridEncoding(cfg)
    x = torch.tensor([[63.9, 63.7, 63.99], [-12.3, 40.1, 63.5]])
    rows, _ = enc.corners(x)
    u = enc.normalize(x).double().numpy()
    for level in range(2):
        scale = float(enc.layout.scales[level])
        for n in range(2):
            grid = [int(math.floor(np.float32(scale * u[n, d] + 0.5))) for d in range(3)]
            assert max(grid) * 2654435761 > 2**32
            expected = enc.layout.offsets[level] + _tcnn_grid_index_py(
                tuple(grid), enc.layout.resolutions[level], enc.layout.sizes[level])
            assert rows[level, 0, n].item() == expected


# --------------------------------------------------------------------------- gradients


def _naive_encode(enc: HashGridEncoding, x: torch.Tensor) -> torch.Tensor:
    """The same encoding with plain autograd through an indexed gather."""
    rows, weights = enc.corners(x)
    table = enc.params.view(-1, enc.layout.n_features)
    feats = table[rows.long()]  # (L, 8, N, F)
    out = (feats * weights.unsqueeze(-1)).sum(1)  # (L, N, F)
    return out.permute(1, 0, 2).reshape(x.shape[0], -1)


# Two hashed levels of only 16 entries each: many vertices collide in one entry.
TINY = HashGridConfig(n_levels=2, half_extent_m=1.0, coarsest_cell_m=0.5, finest_cell_m=0.25,
                      log2_hashmap_size=4)


@pytest.mark.parametrize("cfg", [ONE_LEVEL, TINY], ids=["dense", "hashed"])
def test_hand_written_backward_passes_gradcheck_in_float64(cfg):
    enc = HashGridEncoding(cfg)
    assert enc.n_params <= 256  # gradcheck perturbs every parameter
    u = enc._unit_positions((torch.rand(20, 3) - 0.5) * 2.0)
    params = torch.randn(enc.n_params, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda p: _HashGridFunction.apply(p, u, enc), (params,))


@pytest.mark.parametrize("cfg", [
    HashGridConfig(), SMALL, dataclasses.replace(SMALL, features_per_level=1),
    dataclasses.replace(SMALL, features_per_level=4)], ids=["default", "small", "F1", "F4"])
def test_forward_and_table_gradient_match_naive_autograd(cfg):
    torch.manual_seed(0)
    enc = HashGridEncoding(cfg)
    with torch.no_grad():
        enc.params.uniform_(-1, 1)
    x = (torch.rand(3000, 3) - 0.5) * 1.5
    grad_seed = torch.randn(3000, enc.output_dim)
    out = enc(x)
    (out * grad_seed).sum().backward()
    fast_grad = enc.params.grad.clone()
    enc.params.grad = None
    naive = _naive_encode(enc, x)
    (naive * grad_seed).sum().backward()
    torch.testing.assert_close(out, naive, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(fast_grad, enc.params.grad, rtol=1e-4, atol=1e-5)


def test_gradients_accumulate_and_positions_get_none():
    enc = HashGridEncoding(SMALL)
    x = torch.rand(10, 3, requires_grad=True)
    with pytest.warns(UserWarning, match="no gradient with respect to positions"):
        out = enc(x)
    out.sum().backward()
    first = enc.params.grad.clone()
    enc(x.detach()).sum().backward()
    torch.testing.assert_close(enc.params.grad, 2 * first)
    assert x.grad is None
    # every point's 8 weights per level sum to one, hence the total gradient
    assert first.sum().item() == pytest.approx(10 * enc.output_dim, rel=1e-5)


# --------------------------------------------------------------------------- shapes and edges


def test_output_shape_dtype_and_leading_dimensions():
    enc = HashGridEncoding(SMALL)
    x = torch.rand(4, 7, 3, dtype=torch.float64)
    out = enc(x)
    assert out.shape == (4, 7, 8) and out.dtype == torch.float32
    torch.testing.assert_close(out.reshape(28, 8), enc(x.reshape(28, 3)))
    assert enc(torch.zeros(0, 3)).shape == (0, 8)
    with pytest.raises(ValueError, match=r"\(\.\.\., 3\)"):
        enc(torch.zeros(5, 2))


def test_points_far_outside_the_cube_are_clamped_to_its_surface():
    enc = HashGridEncoding(SMALL, center=(10.0, 0.0, 0.0))
    with torch.no_grad():
        enc.params.uniform_(-1, 1)
    far = torch.tensor([[1e9, 0.2, -0.3], [10.0, -math.inf, 1e30], [-5e3, -5e3, -5e3]])
    surface = torch.tensor([[11.0, 0.2, -0.3], [10.0, -1.0, 1.0], [9.0, -1.0, -1.0]])
    out = enc(far)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out, enc(surface))
    assert enc.contains(surface).all() and not enc.contains(far).any()
    nan_out = enc(torch.tensor([[math.nan, 0.0, 0.0]]))  # no crash; NaN in, NaN out
    assert nan_out.shape == (1, 8)


def test_center_is_a_buffer_and_from_points_ignores_outliers():
    pts = torch.cat((torch.randn(1000, 3) * 0.1 + torch.tensor([2.0, 1.0, 0.5]),
                     torch.full((10, 3), 1e4), torch.full((3, 3), math.nan)))
    center = center_from_points(pts)
    assert center == pytest.approx((2.0, 1.0, 0.5), abs=0.03)
    enc = HashGridEncoding(SMALL, center=center)
    assert set(enc.state_dict()) == {"params", "center"}
    other = HashGridEncoding(SMALL)
    other.load_state_dict(enc.state_dict())
    x = torch.rand(5, 3) + 1.5
    torch.testing.assert_close(other(x), enc(x))


def test_params_start_uniform_within_init_scale():
    enc = HashGridEncoding(dataclasses.replace(SMALL, init_scale=1e-3))
    p = enc.params.detach()
    assert p.abs().max() <= 1e-3 and p.std() == pytest.approx(1e-3 / math.sqrt(3), rel=0.05)


# --------------------------------------------------------------------------- backends


def test_make_hash_grid_falls_back_to_the_reference_and_says_why(caplog):
    with caplog.at_level(logging.INFO, logger="panoptic_mapping.core.field.encoding"):
        enc = make_hash_grid(SMALL, (0.0, 0.0, 0.0), "cpu")
    assert type(enc) is HashGridEncoding
    assert "plain-PyTorch reference on cpu" in caplog.text and "needs CUDA" in caplog.text
    assert tcnn_unavailable_reason("cpu") is not None


class _FakeTinyCudaNN:
    """Stands in for the ``tinycudann`` module: ``Encoding`` runs the Python transcription
    of tcnn's kernel, so the wrapper's plumbing is tested where tcnn cannot run."""

    class Encoding(torch.nn.Module):
        def __init__(self, n_input_dims, encoding_config, seed=1337, dtype=None):
            super().__init__()
            assert n_input_dims == 3 and dtype == torch.float32
            c = encoding_config
            assert (c["otype"], c["interpolation"], c["hash"]) == ("HashGrid", "Linear",
                                                                  "CoherentPrime")
            self.layout = HashGridLayout.from_tcnn(c["n_levels"], c["n_features_per_level"],
                                                   c["log2_hashmap_size"], c["base_resolution"],
                                                   c["per_level_scale"])
            init = torch.empty(self.layout.n_params).uniform_(-1e-4, 1e-4)
            self.params = torch.nn.Parameter(init)
            self.n_output_dims = self.layout.n_levels * self.layout.n_features

        def forward(self, u):
            assert u.dtype == torch.float32 and u.shape[1] == 3
            assert u.min() >= 0 and u.max() <= 1  # the wrapper normalised and clamped
            return _tcnn_encode_py(u, self.params, self.layout)


def test_tcnn_wrapper_exchanges_parameters_with_the_reference(monkeypatch):
    import panoptic_mapping.core.field.encoding as encoding_module

    monkeypatch.setattr(encoding_module, "_import_tcnn", lambda: _FakeTinyCudaNN)
    center = (0.5, -0.25, 1.0)
    wrapped = TcnnHashGridEncoding(SMALL, center=center, device="cpu")
    ref = HashGridEncoding(SMALL, center=center)
    assert set(wrapped.state_dict()) == set(ref.state_dict()) == {"params", "center"}
    assert wrapped.params is wrapped._tcnn.params  # one parameter, registered under our name
    assert wrapped.params.abs().max() <= SMALL.init_scale
    with torch.no_grad():
        ref.params.uniform_(-1, 1)
    wrapped.load_state_dict(ref.state_dict())
    x = (torch.rand(40, 3) - 0.5) * 2.5 + torch.tensor(center)  # some outside the cube
    out_wrapped, out_ref = wrapped(x), ref(x)
    assert out_wrapped.shape == (40, 8) and out_wrapped.dtype == torch.float32
    torch.testing.assert_close(out_wrapped, out_ref, rtol=1e-5, atol=1e-5)
    seed = torch.randn(40, 8)
    (out_wrapped * seed).sum().backward()
    (out_ref * seed).sum().backward()
    torch.testing.assert_close(wrapped.params.grad, ref.params.grad, rtol=1e-4, atol=1e-5)


def _require_tcnn() -> None:
    reason = tcnn_unavailable_reason("cuda")
    if reason is not None:
        pytest.skip(f"tinycudann not installed (optional CUDA backend): {reason}")


@pytest.mark.parametrize("cfg", [HashGridConfig(), SMALL], ids=["default", "small"])
def test_reference_agrees_with_tinycudann(cfg):
    _require_tcnn()
    torch.manual_seed(0)
    ref = HashGridEncoding(cfg, center=(0.5, -0.25, 1.0)).cuda()
    with torch.no_grad():
        ref.params.uniform_(-1, 1)
    tcnn_enc = TcnnHashGridEncoding(cfg, center=(0.5, -0.25, 1.0), device="cuda")
    assert tcnn_enc.params.numel() == ref.params.numel()
    tcnn_enc.load_state_dict(ref.state_dict())  # the parameters exchange as they are
    x = (torch.rand(20000, 3, device="cuda") - 0.5) * 3.0 + ref.center
    out_ref, out_tcnn = ref(x), tcnn_enc(x)
    # tcnn's device exp2f may differ from the host's by an ulp: pos differs by ~1e-3 of a
    # cell at the finest level, so features agree to ~1e-3 of their range (+-1 here)
    torch.testing.assert_close(out_tcnn, out_ref, rtol=0, atol=5e-3)
    seed = torch.randn_like(out_ref)
    (out_ref * seed).sum().backward()
    (out_tcnn * seed).sum().backward()
    torch.testing.assert_close(tcnn_enc.params.grad.float(), ref.params.grad, rtol=1e-2,
                               atol=5e-2)
    assert type(make_hash_grid(cfg, (0.0, 0.0, 0.0), "cuda")) is TcnnHashGridEncoding


# --------------------------------------------------------------------------- benchmark


def test_benchmark_reports_forward_and_backward_times():
    result = benchmark_encoding(2048, "cpu", cfg=SMALL, repeats=1)
    assert result["n_points"] == 2048
    assert 0 < result["forward_ms"] and 0 < result["forward_backward_ms"]
    rays = benchmark_encoding(64 * 16, "cpu", cfg=SMALL, samples_per_ray=16, repeats=1)
    assert rays["n_points"] == 1024
