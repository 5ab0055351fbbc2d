"""Tests for sslunet.ssl.losses.gradient_matching: known values and finite differences."""

from __future__ import annotations

import pytest
import torch

from sslunet.ssl.losses.gradient_matching import encoder_gradients, gradient_matching_loss


def test_gradient_matching_known_values():
    g = [torch.tensor([1.0, 2.0]), torch.tensor([[3.0]])]
    assert gradient_matching_loss(g, g).item() == pytest.approx(0.0, abs=1e-6)
    assert gradient_matching_loss(g, [-t for t in g]).item() == pytest.approx(2.0)
    assert gradient_matching_loss(
        [torch.tensor([1.0, 0.0])], [torch.tensor([0.0, 5.0])]
    ).item() == pytest.approx(1.0)
    assert gradient_matching_loss([torch.zeros(2)], [torch.ones(2)]).item() == pytest.approx(1.0)
    with pytest.raises(ValueError):
        gradient_matching_loss(g, g[:1])
    with pytest.raises(ValueError):
        gradient_matching_loss([torch.zeros(2)], [torch.zeros(3)])


def _tiny_problem():
    g = torch.Generator().manual_seed(5)
    model = torch.nn.Sequential(
        torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 2)
    ).double()
    for p in model.parameters():
        p.data = torch.randn(p.shape, generator=g, dtype=torch.float64)
    x_a, x_b = torch.randn(5, 3, generator=g).double(), torch.randn(5, 3, generator=g).double()
    return model, x_a, x_b


def _gm_value(model, x_a, x_b, params, create_graph):
    loss_a = (model(x_a) ** 2).sum()
    loss_b = torch.tanh(model(x_b)).sum()
    ga = encoder_gradients(loss_a, params, create_graph=create_graph)
    gb = encoder_gradients(loss_b, params, create_graph=create_graph)
    return gradient_matching_loss(ga, gb)


def test_gradient_matching_backpropagates_like_finite_differences():
    model, x_a, x_b = _tiny_problem()
    params = list(model[0].parameters())  # match a subset: the first layer only
    gm = _gm_value(model, x_a, x_b, params, create_graph=True)
    gm.backward()
    # The loss depends on all parameters, including the unmatched last layer.
    for p in model.parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0
    eps = 1e-6
    for p in model.parameters():
        flat = p.data.view(-1)  # (numel,)
        grad_flat = p.grad.view(-1)  # (numel,)
        for i in range(0, flat.numel(), 3):
            old = flat[i].item()
            flat[i] = old + eps
            up = _gm_value(model, x_a, x_b, params, create_graph=False).item()
            flat[i] = old - eps
            down = _gm_value(model, x_a, x_b, params, create_graph=False).item()
            flat[i] = old
            assert grad_flat[i].item() == pytest.approx((up - down) / (2 * eps), rel=1e-4, abs=1e-7)


def test_encoder_gradients_zero_for_unused_params():
    model, x_a, _ = _tiny_problem()
    unused = torch.nn.Parameter(torch.ones(3, dtype=torch.float64))
    grads = encoder_gradients(model(x_a).sum(), [model[0].weight, unused], create_graph=False)
    assert torch.all(grads[1] == 0) and grads[0].abs().sum() > 0
    with pytest.raises(ValueError):
        encoder_gradients(model(x_a).sum(), [])
