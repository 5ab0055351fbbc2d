"""Tests for sslunet.ssl.losses against naive loop implementations of the papers' formulas."""

from __future__ import annotations

import math
import socket

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from sslunet.ssl.losses import (
    GlobalDomainContrastiveLoss,
    LocalContrastiveLoss,
    MaskedMSELoss,
    NTXentLoss,
    ReconstructionLoss,
    encoder_gradients,
    extract_regions,
    gradient_matching_loss,
    local_pair_masks,
    nearest_region_table,
    pair_masks,
    region_corners,
)

# ---------------------------------------------------------------------------------------------
# naive references (plain Python loops over the formulas)


def _cos(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(a @ b / (a.norm() * b.norm()))


def _naive_ntxent(z1: torch.Tensor, z2: torch.Tensor, tau: float) -> float:
    z = torch.cat([z1, z2]).double()
    n = z1.shape[0]
    total = 0.0
    for i in range(2 * n):
        p = (i + n) % (2 * n)
        denom = sum(math.exp(_cos(z[i], z[k]) / tau) for k in range(2 * n) if k != i)
        total += -math.log(math.exp(_cos(z[i], z[p]) / tau) / denom)
    return total / (2 * n)


def _naive_pair_loss(z: torch.Tensor, pos_sets, neg_sets, tau: float) -> float:
    """Mean over (a, p) of -log(e^{s_ap} / (e^{s_ap} + sum_{k in neg(a)} e^{s_ak}))."""
    z = z.double()
    total, count = 0.0, 0
    for a in range(len(z)):
        neg_sum = sum(math.exp(_cos(z[a], z[k]) / tau) for k in neg_sets[a])
        for p in pos_sets[a]:
            e = math.exp(_cos(z[a], z[p]) / tau)
            total += -math.log(e / (e + neg_sum))
            count += 1
    return total / count


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


# ---------------------------------------------------------------------------------------------
# NT-Xent


@pytest.mark.parametrize("n", [2, 4, 7])
@pytest.mark.parametrize("d", [3, 16])
@pytest.mark.parametrize("tau", [0.1, 0.5])
def test_ntxent_matches_naive_loop(n, d, tau):
    g = torch.Generator().manual_seed(100 * n + d)
    z1, z2 = torch.randn(n, d, generator=g), torch.randn(n, d, generator=g)
    got = NTXentLoss(temperature=tau)(z1, z2)
    assert got.item() == pytest.approx(_naive_ntxent(z1, z2, tau), rel=1e-5, abs=1e-6)


def test_ntxent_is_low_for_matching_views_and_rejects_bad_input():
    z = torch.eye(4) * 3.0
    low = NTXentLoss(0.1)(z, z + 0.01)
    high = NTXentLoss(0.1)(z, z[[1, 2, 3, 0]])
    assert low.item() < 0.01 < high.item()
    with pytest.raises(ValueError):
        NTXentLoss(temperature=0.0)
    with pytest.raises(ValueError):
        NTXentLoss()(torch.zeros(3, 2), torch.zeros(2, 2))


# ---------------------------------------------------------------------------------------------
# 2-process gloo test of the gathered losses


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _full_batches():
    g = torch.Generator().manual_seed(7)
    z1, z2 = torch.randn(5, 4, generator=g), torch.randn(5, 4, generator=g)
    # G^D batch: 3 volumes x 4 partitions x 2 views, rows shuffled so ranks get unequal parts.
    vol = torch.arange(3).repeat_interleave(8)
    part = torch.arange(4).repeat_interleave(2).repeat(3)
    order = torch.randperm(24, generator=g)
    z = torch.randn(24, 6, generator=g)
    return z1, z2, z[order], vol[order], part[order]


_SPLITS = {"nt": [0, 3, 5], "gd": [0, 15, 24]}  # rank r owns rows [split[r], split[r + 1])


def _worker(rank: int, world: int, port: int, out_path: str) -> None:
    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world
    )
    try:
        torch.set_num_threads(1)
        z1, z2, z, vol, part = _full_batches()
        a, b = _SPLITS["nt"][rank], _SPLITS["nt"][rank + 1]
        l1, l2 = z1[a:b].clone().requires_grad_(), z2[a:b].clone().requires_grad_()
        nt = NTXentLoss(0.1)(l1, l2)
        nt.backward()
        nt_local = NTXentLoss(0.1, gather_distributed=False)(z1[a:b], z2[a:b])
        a, b = _SPLITS["gd"][rank], _SPLITS["gd"][rank + 1]
        result = {"nt": nt.item(), "nt_local": nt_local.item(), "g1": l1.grad, "g2": l2.grad}
        for strategy in ("GD", "GD-"):
            lz = z[a:b].clone().requires_grad_()
            gd = GlobalDomainContrastiveLoss(0.1, strategy)(lz, vol[a:b], part[a:b])
            gd.backward()
            result[strategy] = gd.item()
            result[strategy + "_grad"] = lz.grad
        torch.save(result, f"{out_path}.{rank}")
    finally:
        dist.destroy_process_group()


@pytest.mark.skipif(
    not (dist.is_available() and dist.is_gloo_available()), reason="needs the gloo backend"
)
def test_gathered_losses_match_single_process_on_two_ranks(tmp_path):
    world = 2
    out = str(tmp_path / "res")
    mp.spawn(_worker, args=(world, _free_port(), out), nprocs=world, join=True)
    res = [torch.load(f"{out}.{r}") for r in range(world)]
    z1, z2, z, vol, part = _full_batches()

    f1, f2 = z1.clone().requires_grad_(), z2.clone().requires_grad_()
    single = NTXentLoss(0.1)(f1, f2)
    single.backward()
    assert np.mean([r["nt"] for r in res]) == pytest.approx(single.item(), rel=1e-5)
    # DDP averages gradients over ranks; a rank's gathered-loss gradient must be W x the slice.
    for r in range(world):
        a, b = _SPLITS["nt"][r], _SPLITS["nt"][r + 1]
        torch.testing.assert_close(res[r]["g1"] / world, f1.grad[a:b], rtol=1e-4, atol=1e-6)
        torch.testing.assert_close(res[r]["g2"] / world, f2.grad[a:b], rtol=1e-4, atol=1e-6)
        expected_local = NTXentLoss(0.1)(z1[a:b], z2[a:b]).item()
        assert res[r]["nt_local"] == pytest.approx(expected_local, rel=1e-5)

    for strategy in ("GD", "GD-"):
        fz = z.clone().requires_grad_()
        single = GlobalDomainContrastiveLoss(0.1, strategy)(fz, vol, part)
        single.backward()
        assert np.mean([r[strategy] for r in res]) == pytest.approx(single.item(), rel=1e-5)
        for r in range(world):
            a, b = _SPLITS["gd"][r], _SPLITS["gd"][r + 1]
            torch.testing.assert_close(
                res[r][strategy + "_grad"] / world, fz.grad[a:b], rtol=1e-4, atol=1e-6
            )


# ---------------------------------------------------------------------------------------------
# global domain-specific losses


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
    assert got.item() == pytest.approx(_naive_pair_loss(z, pos_sets, neg_sets, tau), rel=1e-5)


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


# ---------------------------------------------------------------------------------------------
# local losses


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
    return _naive_pair_loss(z, pos_sets, neg_sets, tau)


def test_region_corners_and_extraction():
    corners = region_corners((48, 48), 3, "chaitanya")
    assert len(corners) == 13
    assert {tuple(c) for c in corners} >= {(0, 0), (22, 45), (45, 45), (11, 33), (33, 11)}
    assert len(region_corners((10, 12, 14), (2, 3, 3), "chaitanya")) == 35
    np.testing.assert_array_equal(region_corners((9, 7), 3, 2), [[0, 0], [0, 4], [6, 0], [6, 4]])
    f = torch.randn(2, 3, 9, 7)
    regions = extract_regions(f, 3, 2)
    assert regions.shape == (2, 4, 27)
    torch.testing.assert_close(regions[1, 2], f[1, :, 6:9, 0:3].reshape(-1))  # (27,)
    f3 = torch.randn(1, 2, 6, 6, 6)
    assert extract_regions(f3, (1, 2, 2), np.array([[0, 0, 0], [5, 4, 4]])).shape == (1, 2, 8)
    with pytest.raises(ValueError):
        region_corners((4, 4), 5)


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


# ---------------------------------------------------------------------------------------------
# gradient matching


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


# ---------------------------------------------------------------------------------------------
# reconstruction


def test_masked_mse_matches_naive():
    g = torch.Generator().manual_seed(9)
    pred, target = torch.randn(2, 3, 4, 5, generator=g), torch.randn(2, 3, 4, 5, generator=g)
    mask = torch.rand(2, 1, 4, 5, generator=g) < 0.4
    expected = ((pred - target) ** 2).permute(0, 2, 3, 1)[mask[:, 0]].mean()  # (n_masked, C)
    torch.testing.assert_close(MaskedMSELoss()(pred, target, mask), expected)
    p = pred.clone().requires_grad_()
    zero = MaskedMSELoss()(p, target, torch.zeros_like(mask))
    zero.backward()
    assert zero.item() == 0.0 and torch.all(p.grad == 0)
    with pytest.raises(ValueError):
        MaskedMSELoss()(pred, target, mask[:, :, :3])


def test_reconstruction_loss():
    pred, target = torch.randn(2, 1, 3, 3, 3), torch.randn(2, 1, 3, 3, 3)
    torch.testing.assert_close(
        ReconstructionLoss("mse")(pred, target), torch.nn.functional.mse_loss(pred, target)
    )
    torch.testing.assert_close(
        ReconstructionLoss("l1")(pred, target), torch.nn.functional.l1_loss(pred, target)
    )
    with pytest.raises(ValueError):
        ReconstructionLoss("huber")
