"""Gradient matching between two objectives (ReFs, Xie et al. 2024, Medical Image Analysis 91).

ReFs pretrains an encoder with a self-supervised loss and a supervised reference task and asks
that both produce *similar gradients* on the shared feature extractor. The paper does not
publish the formula; our reading (labelled as such in the docs) is::

    g_ssl = grad_{theta_e} L_ssl,   g_ref = grad_{theta_e} L_ref      (create_graph=True)
    L_gm  = 1 - cos( vec(g_ssl), vec(g_ref) )                          in [0, 2]
    L     = L_ssl + lambda_ref * L_ref + lambda_gm * L_gm              (double backprop)

``vec`` concatenates the flattened gradients of all matched parameters. Cost control is the
caller's: pass only a subset of parameters (e.g. the last K encoder stages) to
:func:`encoder_gradients`; the second-order graph then only spans those.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


def encoder_gradients(
    loss: torch.Tensor, params: Sequence[torch.Tensor], create_graph: bool = True
) -> list[torch.Tensor]:
    """Gradients of ``loss`` with respect to ``params``; unused parameters get zeros.

    Args:
        loss: scalar loss.
        params: the parameters to match (the matched subset of the encoder).
        create_graph: keep the graph so that a loss of these gradients can be backpropagated
            (needed for :func:`gradient_matching_loss` to train the parameters). The graph of
            ``loss`` is always retained, so ``loss`` itself can still be backpropagated.

    Returns:
        One tensor per parameter, same shapes.
    """
    params = list(params)
    if not params:
        raise ValueError("params is empty")
    grads = torch.autograd.grad(
        loss, params, create_graph=create_graph, retain_graph=True, allow_unused=True
    )
    return [torch.zeros_like(p) if g is None else g for p, g in zip(params, grads)]


def gradient_matching_loss(
    grads_a: Sequence[torch.Tensor], grads_b: Sequence[torch.Tensor], eps: float = 1e-12
) -> torch.Tensor:
    """``1 - cos(vec(g_a), vec(g_b))``: 0 for parallel, 1 for orthogonal, 2 for opposite.

    Args:
        grads_a: gradients of objective a, one tensor per parameter.
        grads_b: gradients of objective b, same shapes in the same order.
        eps: lower bound on the product of norms (a zero gradient gives cos = 0, loss 1).

    Returns:
        Scalar tensor, differentiable through the gradients (if they carry a graph).
    """
    if len(grads_a) != len(grads_b) or not grads_a:
        raise ValueError(
            f"need two equally long, non-empty gradient lists, got {len(grads_a)}, {len(grads_b)}"
        )
    for ga, gb in zip(grads_a, grads_b):
        if ga.shape != gb.shape:
            raise ValueError(f"gradient shapes differ: {tuple(ga.shape)} vs {tuple(gb.shape)}")
    va = torch.cat([g.reshape(-1) for g in grads_a])  # (P,)
    vb = torch.cat([g.reshape(-1) for g in grads_b])  # (P,)
    # Norms via sqrt of sums would have an infinite derivative at a zero gradient; clamping the
    # product of squared norms keeps the backward finite.
    denom = torch.sqrt(torch.clamp((va * va).sum() * (vb * vb).sum(), min=eps * eps))
    return 1.0 - (va * vb).sum() / denom
