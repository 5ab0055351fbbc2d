"""Tests for sslunet.ssl.losses.local_contrastive against naive loops over the paper's formula."""

from __future__ import annotations

import pytest
import torch

from sslunet.ssl.losses.local_contrastive import LocalContrastiveLoss, local_pair_masks
from sslunet.ssl.regions import nearest_region_table, region_corners
from tests.helpers.oracles import naive_pair_loss


def _naive_local(e1, e2, tau, partition_ids=None, table=None, cross_image=False):
    b, r, _ = e1.shape
    z = torch.cat([e1, e2]).reshape(2 * b * r, -1)  # row (v * B + img) * R + region
    rows = [(v, i, k) for v in range(2) for i in range(b) for k in range(r)]
    related = (
        (lambda i, j: i == j)
        if partition_ids is None
        else (lambda i, j: partition_ids[i] == partition_ids[j])
    )
    pos_sets, neg_sets = [], []
    for a, (_, i, k) in enumerate(rows):
        pos_sets.append(
            {c for c, (_, j, m) in enumerate(rows) if c != a and related(i, j) and m == k}
        )
        allowed = set(range(r)) - {k} if table is None else set(table[k].tolist()) - {k}
        neg_sets.append({c for c, (_, j, m) in enumerate(rows)
                         if (related(i, j) and m in allowed) or (cross_image and not related(i, j))})
    return naive_pair_loss(z, pos_sets, neg_sets, tau)


@pytest.mark.parametrize("tau", [0.1, 0.5])
def test_local_loss_lr_matches_naive_loop(tau):
    g = torch.Generator().manual_seed(11)
    e1, e2 = torch.randn(3, 5, 4, generator=g), torch.randn(3, 5, 4, generator=g)
    got = LocalContrastiveLoss(tau)(e1, e2)
    assert got.item() == pytest.approx(_naive_local(e1, e2, tau), rel=1e-5)
    table = nearest_region_table(region_corners((5, 5), 1, (5, 1)), 2)  # 5 regions on a line
    assert table.tolist() == [[1, 2], [0, 2], [1, 3], [2, 4], [3, 2]]
    got = LocalContrastiveLoss(tau)(e1, e2, negative_table=table)
    assert got.item() == pytest.approx(_naive_local(e1, e2, tau, table=table), rel=1e-5)


@pytest.mark.parametrize("use_table", [False, True])
def test_local_loss_cross_image_negatives_match_naive_loop(use_table):
    g = torch.Generator().manual_seed(13)
    e1, e2 = torch.randn(3, 5, 4, generator=g), torch.randn(3, 5, 4, generator=g)
    table = nearest_region_table(region_corners((5, 5), 1, (5, 1)), 2) if use_table else None
    got = LocalContrastiveLoss(0.1, cross_image=True)(e1, e2, negative_table=table)
    want = _naive_local(e1, e2, 0.1, table=table, cross_image=True)
    assert got.item() == pytest.approx(want, rel=1e-5)
    # more negatives can only raise each pair's loss
    assert got.item() > LocalContrastiveLoss(0.1)(e1, e2, negative_table=table).item()
    part = torch.tensor([0, 1, 0])
    got = LocalContrastiveLoss(0.1, "LD", cross_image=True)(e1, e2, partition_ids=part)
    want = _naive_local(e1, e2, 0.1, part.tolist(), cross_image=True)
    assert got.item() == pytest.approx(want, rel=1e-5)


def test_local_loss_ld_matches_naive_loop():
    g = torch.Generator().manual_seed(12)
    e1, e2 = torch.randn(4, 3, 6, generator=g), torch.randn(4, 3, 6, generator=g)
    part = torch.tensor([0, 1, 0, 1])
    got = LocalContrastiveLoss(0.1, "LD")(e1, e2, partition_ids=part)
    assert got.item() == pytest.approx(_naive_local(e1, e2, 0.1, part.tolist()), rel=1e-5)
    pos, neg = local_pair_masks(4, 3, part)
    assert pos.shape == (24, 24) and int(pos[0].sum()) == 3  # other view + both views of image 2
    with pytest.raises(ValueError):
        LocalContrastiveLoss(0.1, "LD")(e1, e2)


def test_local_loss_region_pairing():
    # Well-separated region features: region k is the one-hot vector e_k in both views.
    e = torch.eye(6).repeat(2, 1, 1) * 5.0  # (B=2, R=6, D=6)
    loss = LocalContrastiveLoss(0.1)
    matched = loss(e, e.clone())
    permuted = loss(e, e[:, [1, 2, 3, 4, 5, 0]])
    assert matched.item() < 1e-3
    assert permuted.item() > 5.0
    with pytest.raises(ValueError):
        LocalContrastiveLoss(variant="XX")
