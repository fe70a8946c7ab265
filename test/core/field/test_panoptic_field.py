"""The panoptic field: bounded outputs, no gradient from semantics/instances into density,
and an open-ended instance prototype table whose growth keeps the optimiser state."""
from __future__ import annotations

import numpy as np
import torch

from panoptic_mapping.core.field.encoding import HashGridConfig
from panoptic_mapping.core.field.panoptic_field import FieldConfig, InstancePrototypes, PanopticField
from panoptic_mapping.core.field.losses import instance_loss, semantic_loss
from panoptic_mapping.core.field.sampling import RaySamples
from panoptic_mapping.core.field.renderer import render_rays


def small_field(embedding_dim: int = 8) -> PanopticField:
    grid = HashGridConfig(n_levels=4, log2_hashmap_size=10, coarsest_cell_m=0.5,
                          finest_cell_m=0.05, half_extent_m=4.0)
    cfg = FieldConfig(geometry_grid=grid, semantic_grid=grid, instance_grid=grid, hidden_dim=16)
    torch.manual_seed(0)
    return PanopticField(cfg, (0.0, 0.0, 0.0), embedding_dim)


def rays(n: int = 32, s: int = 8) -> tuple[torch.Tensor, torch.Tensor, RaySamples]:
    origins = torch.zeros(n, 3)
    dirs = torch.nn.functional.normalize(torch.randn(n, 3, generator=torch.Generator().manual_seed(1)), dim=1)
    edges = torch.linspace(0.1, 2.0, s + 1).expand(n, s + 1)
    valid = torch.ones(n, s, dtype=torch.bool)
    valid[:, -2:] = False  # padded samples are allowed
    return origins, dirs, RaySamples(edges[:, :-1], edges[:, 1:], valid)


def test_outputs_are_bounded():
    f = small_field()
    x = torch.randn(100, 3)
    sigma, geo = f.geometry(x)
    assert (sigma >= 0).all() and sigma.shape == (100,)
    rgb = f.color(geo)
    assert ((rgb >= 0) & (rgb <= 1)).all()
    assert torch.allclose(f.instance_features(x).norm(dim=-1), torch.ones(100), atol=1e-5)
    assert torch.allclose(f.decode_semantics(f.semantic_features(x)).norm(dim=-1),
                          torch.ones(100), atol=1e-5)
    rows = f.prototypes.rows(np.array([3, 7]))
    logits = f.instance_logits(f.instance_features(x), rows)
    assert logits.abs().max() <= 1.0 / f.cfg.instance_temperature + 1e-4


def test_no_gradient_from_semantics_or_instances_reaches_density():
    f = small_field()
    o, d, samples = rays()
    out = render_rays(f, o, d, samples)
    target = torch.nn.functional.normalize(torch.randn(32, 8), dim=-1)
    rows = f.prototypes.rows(np.array([1, 2, 3]))
    loss = (semantic_loss(f.decode_semantics(out["semantic"]), target, torch.ones(32, dtype=torch.bool))
            + instance_loss(f.instance_logits(out["instance"], rows), torch.randint(0, 3, (32,))))
    loss.backward()
    geometry = list(f.geo_grid.parameters()) + list(f.geo_mlp.parameters())
    assert all(p.grad is None or p.grad.abs().max() == 0 for p in geometry)
    assert any(p.grad is not None and p.grad.abs().max() > 0 for p in f.sem_grid.parameters())
    assert any(p.grad is not None and p.grad.abs().max() > 0 for p in f.inst_mlp.parameters())
    # while the colour loss does train density
    f.zero_grad()
    render_rays(f, o, d, samples)["rgb"].sum().backward()
    assert any(p.grad is not None and p.grad.abs().max() > 0 for p in f.geo_mlp.parameters())


def test_prototypes_are_open_ended_and_reuse_rows():
    protos = InstancePrototypes(dim=4, capacity=2)
    rows = protos.rows(np.array([10, 0, 11]))
    assert rows[1] == -1 and len(set(rows[[0, 2]])) == 2
    grown = []
    protos.on_grow = lambda old, new: grown.append((old.shape[0], new.shape[0]))
    protos.rows(np.array([12, 13, 14]))  # beyond the capacity of 2
    assert protos.capacity >= 5 and grown == [(2, 4), (4, 8)]
    protos.release([10])
    free_row = rows[0]
    assert protos.rows(np.array([99]))[0] == free_row  # the freed row is reused
    ids, _ = protos.active()
    assert ids.tolist() == [11, 12, 13, 14, 99]


def test_growth_keeps_adam_moments():
    from panoptic_mapping.core.field.trainer import Trainer

    f = small_field()
    opt_owner = Trainer.__new__(Trainer)  # only the optimiser plumbing is exercised
    opt_owner.optimizer = torch.optim.Adam(f.parameters(), lr=0.1)
    f.prototypes.on_grow = opt_owner._replace_parameter
    rows = f.prototypes.rows(np.arange(1, 65))  # fills the 64 initial rows
    f.prototypes.unit(rows).sum().backward()
    opt_owner.optimizer.step()
    before = opt_owner.optimizer.state[f.prototypes.weight]["exp_avg"].clone()
    f.prototypes.rows(np.array([65]))  # grows to 128 rows
    after = opt_owner.optimizer.state[f.prototypes.weight]["exp_avg"]
    assert after.shape[0] == 128 and torch.equal(after[:64], before)
    assert any(p is f.prototypes.weight for g in opt_owner.optimizer.param_groups
               for p in g["params"])
