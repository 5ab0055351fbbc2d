"""Tests for sslunet.ssl.losses._distributed: contrastive losses gathered across ranks (a
2-process gloo run) match the single-process loss and gradients."""

from __future__ import annotations

import socket

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from sslunet.ssl.losses.global_contrastive import GlobalDomainContrastiveLoss
from sslunet.ssl.losses.ntxent import NTXentLoss


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
