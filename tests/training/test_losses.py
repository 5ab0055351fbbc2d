"""Tests for sslunet.training.losses against naive loops and known answers."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from sslunet.training.losses import (
    DiceCELoss,
    SoftDiceLoss,
    deep_supervision_weights,
    downsample_target,
    foreground_confusion,
)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def naive_soft_dice(logits: torch.Tensor, target: torch.Tensor, batch_dice: bool,
                    smooth: float = 1e-5, ignore: int | None = None) -> float:
    """Voxel-by-voxel loop over (sample, class) with Python floats; voxels whose target is
    ``ignore`` are skipped."""
    probs = torch.softmax(logits.double(), 1)
    b, k = probs.shape[:2]
    p = probs.reshape(b, k, -1).tolist()  # (B, K, voxels)
    t = target.reshape(b, -1).tolist()  # (B, voxels)
    counts = {}  # (sample, class) -> [tp, fp, fn]
    for i in range(b):
        for c in range(1, k):
            tp = fp = fn = 0.0
            for v in range(len(t[i])):
                if t[i][v] == ignore:
                    continue
                is_c = 1.0 if t[i][v] == c else 0.0
                tp += p[i][c][v] * is_c
                fp += p[i][c][v] * (1 - is_c)
                fn += (1 - p[i][c][v]) * is_c
            counts[i, c] = [tp, fp, fn]
    dices = []
    if batch_dice:
        for c in range(1, k):
            tp, fp, fn = (sum(counts[i, c][j] for i in range(b)) for j in range(3))
            dices.append((2 * tp + smooth) / (2 * tp + fp + fn + smooth))
    else:
        dices = [(2 * tp + smooth) / (2 * tp + fp + fn + smooth)
                 for tp, fp, fn in counts.values()]
    return 1 - sum(dices) / len(dices)


@pytest.mark.parametrize("batch_dice", [False, True])
@pytest.mark.parametrize("spatial", [(5, 6), (3, 4, 5)])
def test_soft_dice_matches_naive_loop(batch_dice, spatial):
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(2, 3, *spatial, generator=g)
    target = torch.randint(0, 3, (2, *spatial), generator=g)
    got = SoftDiceLoss(batch_dice)(logits, target).item()
    assert got == pytest.approx(naive_soft_dice(logits, target, batch_dice), abs=1e-6)


def test_dice_ce_small_on_perfect_prediction_large_on_wrong_one():
    g = torch.Generator().manual_seed(2)
    target = torch.randint(0, 3, (2, 6, 7), generator=g)
    onehot = F.one_hot(target, 3).movedim(-1, 1).float()  # (B, K, Y, X)
    loss = DiceCELoss()
    assert loss(30 * onehot, target).item() < 1e-4
    assert loss(30 * onehot.roll(1, dims=1), target).item() > 1.0  # every voxel wrong


def test_deep_supervision_weights():
    assert deep_supervision_weights(1) == [1.0]
    w = deep_supervision_weights(4)
    expected = np.array([1, 0.5, 0.25, 0]) / 1.75
    assert np.allclose(w, expected) and w[-1] == 0.0
    assert sum(w) == pytest.approx(1.0)
    for n in range(2, 7):
        w = deep_supervision_weights(n)
        assert sum(w) == pytest.approx(1.0) and w[-1] == 0.0
        assert all(w[i + 1] == pytest.approx(w[i] / 2) for i in range(n - 2))


def test_downsample_target_shapes_and_nearest_values():
    g = torch.Generator().manual_seed(3)
    coarse = torch.randint(0, 3, (2, 1, 2, 4, 4), generator=g)
    # blocks of 2x2x2 constant voxels: nearest downsampling by 2 must recover ``coarse``
    target = coarse.repeat_interleave(2, 2).repeat_interleave(2, 3).repeat_interleave(2, 4)
    outs = downsample_target(target, [(4, 8, 8), (2, 4, 4), (2, 2, 2)])
    assert [tuple(o.shape) for o in outs] == [(2, 4, 8, 8), (2, 2, 4, 4), (2, 2, 2, 2)]
    assert all(o.dtype == torch.long for o in outs)
    assert torch.equal(outs[0], target[:, 0])
    assert torch.equal(outs[1], coarse[:, 0])
    target2d = coarse[:, :, 0].repeat_interleave(4, 2).repeat_interleave(4, 3)  # (2, 1, 16, 16)
    outs2d = downsample_target(target2d, [(16, 16), (4, 4)])
    assert torch.equal(outs2d[1], coarse[:, 0, 0])


def test_foreground_confusion_known_example():
    target = torch.tensor([[0, 1, 1, 2, 2, 0]])  # (B=1, X=6)
    pred = torch.tensor([[0, 1, 2, 2, 0, 1]])
    logits = F.one_hot(pred, 3).movedim(-1, 1).float()  # (1, 3, 6)
    tp, fp, fn = foreground_confusion(logits, target)
    # class 1: tp at 1, fp at 5, fn at 2; class 2: tp at 3, fp at 2, fn at 4
    assert tp.tolist() == [1, 1] and fp.tolist() == [1, 1] and fn.tolist() == [1, 1]
    tp, fp, fn = foreground_confusion(torch.cat([logits, logits]), torch.cat([target, pred]))
    assert tp.tolist() == [3, 3] and fp.tolist() == [1, 1] and fn.tolist() == [1, 1]


@pytest.mark.parametrize("batch_dice", [False, True])
def test_ignored_voxels_count_in_no_loss_term(batch_dice):
    g = torch.Generator().manual_seed(2)
    logits = torch.randn(2, 3, 4, 5, generator=g)
    target = torch.randint(0, 3, (2, 4, 5), generator=g)
    target[0, :2] = 3  # unannotated rows
    target[1, :, 3:] = 3
    keep = target != 3
    got = DiceCELoss(batch_dice, ignore_label=3)(logits, target)
    ce = F.cross_entropy(logits.movedim(1, -1)[keep], target[keep])  # (annotated voxels, K)
    dice = naive_soft_dice(logits, target, batch_dice, ignore=3)
    assert got.item() == pytest.approx(ce.item() + dice, abs=1e-6)
    other = logits.clone()
    other.movedim(1, -1)[~keep] = torch.randn(int((~keep).sum()), 3, generator=g)
    assert DiceCELoss(batch_dice, ignore_label=3)(other, target).item() == \
        pytest.approx(got.item(), abs=1e-6)  # what is predicted where nobody labelled: no matter


def test_a_batch_without_annotated_voxels_gives_zero_loss_and_gradient():
    logits = torch.randn(2, 3, 4, 4, requires_grad=True)
    loss = DiceCELoss(ignore_label=3)(logits, torch.full((2, 4, 4), 3))
    loss.backward()
    assert loss.item() == 0.0 and torch.equal(logits.grad, torch.zeros_like(logits))


def test_foreground_confusion_skips_ignored_voxels():
    target = torch.tensor([[0, 1, 1, 2, 3, 3]])  # (B=1, X=6); 3 = ignore
    pred = torch.tensor([[0, 1, 2, 2, 1, 2]])
    logits = F.one_hot(pred, 3).movedim(-1, 1).float()  # (1, 3, 6)
    tp, fp, fn = foreground_confusion(logits, target, ignore_label=3)
    assert tp.tolist() == [1, 1] and fp.tolist() == [0, 1] and fn.tolist() == [1, 0]
