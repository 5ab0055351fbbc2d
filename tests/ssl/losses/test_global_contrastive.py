"""Tests for sslunet.ssl.losses.global_contrastive (G^D, G^D-) against naive loops over the
definitions."""

from __future__ import annotations

import pytest
import torch

from sslunet.ssl.losses.global_contrastive import GlobalDomainContrastiveLoss, pair_masks
from tests.helpers.oracles import naive_pair_loss


def _gd_sets(vol, part, strategy):
    """Positive/negative index sets of G^D / G^D- written directly from the definitions."""
    m = len(vol)
    pos, neg = [], []
    for a in range(m):
        if strategy == "GD":
            pos.append({b for b in range(m) if b != a and part[b] == part[a]})
        else:
            pos.append({b for b in range(m) if b != a and part[b] == part[a] and vol[b] == vol[a]})
        neg.append({b for b in range(m) if part[b] != part[a]})
    return pos, neg


def _hand_batch():
    """2 volumes x 4 partitions x 2 views; row = 8 * volume + 2 * partition + view."""
    vol = torch.tensor([v for v in range(2) for _ in range(8)])
    part = torch.tensor([p for _ in range(2) for p in range(4) for _ in range(2)])
    view = torch.tensor([w for _ in range(8) for w in range(2)])
    return vol, part, view


def test_pair_masks_on_hand_built_batch():
    vol, part, _ = _hand_batch()
    pos_gd, neg_gd = pair_masks(vol, part, "GD")
    pos_gdm, neg_gdm = pair_masks(vol, part, "GD-")
    # Anchor 0 = (volume 0, partition 0, view 0), written out by hand.
    assert set(torch.nonzero(pos_gd[0]).flatten().tolist()) == {1, 8, 9}
    assert set(torch.nonzero(pos_gdm[0]).flatten().tolist()) == {1}
    others = {2, 3, 4, 5, 6, 7, 10, 11, 12, 13, 14, 15}
    assert set(torch.nonzero(neg_gd[0]).flatten().tolist()) == others
    assert set(torch.nonzero(neg_gdm[0]).flatten().tolist()) == others
    # Anchor 13 = (volume 1, partition 2, view 1).
    assert set(torch.nonzero(pos_gd[13]).flatten().tolist()) == {4, 5, 12}
    assert set(torch.nonzero(pos_gdm[13]).flatten().tolist()) == {12}
    for strategy, (pos, neg) in {"GD": (pos_gd, neg_gd), "GD-": (pos_gdm, neg_gdm)}.items():
        pos_sets, neg_sets = _gd_sets(vol.tolist(), part.tolist(), strategy)
        for a in range(16):
            assert set(torch.nonzero(pos[a]).flatten().tolist()) == pos_sets[a]
            assert set(torch.nonzero(neg[a]).flatten().tolist()) == neg_sets[a]
    assert int(pos_gd.sum()) == 16 * 3 and int(pos_gdm.sum()) == 16


@pytest.mark.parametrize("strategy", ["GD", "GD-"])
@pytest.mark.parametrize("tau", [0.1, 0.5])
def test_global_loss_matches_naive_loop(strategy, tau):
    vol, part, view = _hand_batch()
    z = torch.randn(16, 5, generator=torch.Generator().manual_seed(3))
    got = GlobalDomainContrastiveLoss(tau, strategy)(z, vol, part, view)
    pos_sets, neg_sets = _gd_sets(vol.tolist(), part.tolist(), strategy)
    assert got.item() == pytest.approx(naive_pair_loss(z, pos_sets, neg_sets, tau), rel=1e-5)


def test_global_loss_edge_cases():
    vol, part, view = _hand_batch()
    z = torch.randn(16, 5, requires_grad=True)
    with pytest.raises(ValueError):
        GlobalDomainContrastiveLoss(strategy="GDX")
    with pytest.raises(ValueError):
        GlobalDomainContrastiveLoss(temperature=-1.0)
    with pytest.raises(ValueError, match="duplicate"):
        GlobalDomainContrastiveLoss()(z, vol, part, torch.zeros(16, dtype=torch.long))
    # One image per partition: no positive pair at all -> 0, still differentiable.
    loss = GlobalDomainContrastiveLoss(strategy="GD-")(z[:4], torch.arange(4), torch.arange(4))
    loss.backward()
    assert loss.item() == 0.0 and torch.all(z.grad == 0)
