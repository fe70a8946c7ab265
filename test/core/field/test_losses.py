"""The field's depth loss, with and without per-ray confidence: worked examples."""
from __future__ import annotations

import torch

from panoptic_mapping.core.field.losses import depth_loss


def test_depth_loss_is_the_mean_error_over_known_depth():
    pred = torch.tensor([1.0, 2.0, 3.0])
    target = torch.tensor([1.5, 0.0, 2.0])  # the middle ray's depth is unknown
    assert float(depth_loss(pred, target)) == 0.75


def test_confidence_weighs_each_rays_error():
    pred = torch.tensor([1.0, 2.0, 3.0], requires_grad=True)
    target = torch.tensor([1.5, 0.0, 2.0])
    weight = torch.tensor([1.0, 1.0, 0.5])  # the unknown ray's weight does not count
    loss = depth_loss(pred, target, weight)
    assert abs(loss.item() - (0.5 * 1.0 + 1.0 * 0.5) / 1.5) < 1e-6
    loss.backward()
    # d/dpred of sum(w |pred - t|) / sum(w): sign(pred - t) w / 1.5
    assert torch.allclose(pred.grad, torch.tensor([-1 / 1.5, 0.0, 0.5 / 1.5]))
    # full confidence everywhere is the plain loss
    assert depth_loss(pred, target, torch.ones(3)).item() == depth_loss(pred, target).item()


def test_no_trusted_depth_gives_zero_and_zero_gradients():
    pred = torch.tensor([1.0, 2.0], requires_grad=True)
    loss = depth_loss(pred, torch.tensor([1.5, 2.5]), torch.zeros(2))
    assert loss.item() == 0.0
    loss.backward()
    assert torch.equal(pred.grad, torch.zeros(2))
