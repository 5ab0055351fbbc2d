"""Shared kernel: contrastive loss summed over an explicit set of (anchor, positive) pairs.

For an anchor ``a``, a positive ``p`` and the negatives ``neg(a)`` of ``a``, with
``s = cos / tau``::

    l(a, p) = -log( e^{s_ap} / (e^{s_ap} + sum_{k in neg(a)} e^{s_ak}) )
            = softplus( logsumexp_{k in neg(a)} s_ak - s_ap )

The second form is what we compute (stable for any tau); an anchor without negatives gives
``l = 0`` for each of its positives.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def cosine_logits(anchors: torch.Tensor, keys: torch.Tensor, temperature: float) -> torch.Tensor:
    """Cosine similarity divided by the temperature.

    Args:
        anchors: ``(..., A, D)``.
        keys: ``(..., K, D)``.
        temperature: tau > 0.

    Returns:
        ``(..., A, K)`` logits ``s``.
    """
    a = F.normalize(anchors, dim=-1)
    k = F.normalize(keys, dim=-1)
    return a @ k.transpose(-1, -2) / temperature  # (..., A, D) @ (..., D, K) -> (..., A, K)


def pair_loss_sum(logits: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor) -> torch.Tensor:
    """Sum of ``l(a, p)`` over all pairs with ``pos[..., a, p]`` true.

    Args:
        logits: ``(..., A, K)`` similarities ``s``.
        pos: ``(..., A, K)`` bool (broadcastable), positive pairs.
        neg: ``(..., A, K)`` bool (broadcastable), negatives of each anchor.

    Returns:
        Scalar tensor: the sum (not the mean) of the pair losses.
    """
    neg = neg.expand_as(logits)
    has_neg = neg.any(dim=-1)  # (..., A)
    # Rows without negatives would give logsumexp(-inf...) whose backward is NaN; feed them
    # zeros and replace the result afterwards.
    safe = torch.where(neg, logits, torch.full_like(logits, float("-inf")))
    safe = torch.where(has_neg.unsqueeze(-1), safe, torch.zeros_like(logits))
    neg_lse = torch.logsumexp(safe, dim=-1)  # (..., A)
    neg_lse = torch.where(has_neg, neg_lse, torch.full_like(neg_lse, float("-inf")))
    losses = F.softplus(neg_lse.unsqueeze(-1) - logits)  # (..., A, K)
    return torch.where(pos.expand_as(logits), losses, torch.zeros_like(losses)).sum()
