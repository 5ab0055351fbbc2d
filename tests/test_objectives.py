"""Unit tests of the pretraining objectives, their batches and the G^D partition sampler."""

from __future__ import annotations

import dataclasses
import shutil

import numpy as np
import pytest
import torch

from sslunet.ssl.two_views import unmirror
from sslunet.errors import InputError
from sslunet.preprocessing.storage import CaseProperties, save_case
from sslunet.ssl.objectives import get_objective, list_objectives, register_objective
from sslunet.ssl.objectives.base import grid_pool, parse_options
from sslunet.ssl.objectives.contrastive import ContrastiveObjective, default_local_level
from sslunet.ssl.views import PartitionBatchLoader, ZipStream, partition_position
from tests.helpers.pretraining import CONFIGS, first_batch, make_setup

pytestmark = pytest.mark.usefixtures("one_torch_thread")


# ------------------------------------------------------------------------------ registry


def test_registry_lists_every_objective_and_rejects_unknown_names():
    assert list_objectives() == ["contrastive", "genesis", "mae", "refs", "regression", "simclr"]
    assert get_objective("contrastive") is ContrastiveObjective
    with pytest.raises(InputError, match="known objectives: contrastive, genesis"):
        get_objective("byol")
    with pytest.raises(ValueError, match="already registered"):
        register_objective("mae")(ContrastiveObjective)
    with pytest.raises(ValueError):
        register_objective("random")


def test_options_are_validated_with_the_option_name():
    opts_cls = get_objective("mae").Options
    assert parse_options("mae", opts_cls, {"mask_ratio": 0.75}).mask_ratio == 0.75
    with pytest.raises(InputError, match="option temperature does not apply to objective 'mae'"):
        parse_options("mae", opts_cls, {"temperature": 0.2})
    with pytest.raises(InputError, match="mask_ratio must be in"):
        parse_options("mae", opts_cls, {"mask_ratio": 1.5})
    with pytest.raises(InputError, match="strategy"):
        parse_options("contrastive", ContrastiveObjective.Options, {"strategy": "GR"})


# ------------------------------------------------------------------------------ every objective


@pytest.mark.parametrize("config", CONFIGS)
@pytest.mark.parametrize("objective", list_objectives())
def test_one_step_trains_exactly_the_declared_modules(tiny, objective, config):
    paths, plans = tiny
    obj = get_objective(objective).create(make_setup(paths, plans, config))
    for stage in obj.stages():
        obj.set_stage(stage.name)
        obj.zero_grad(set_to_none=True)
        out = obj(first_batch(obj))
        assert out["loss"].ndim == 0 and torch.isfinite(out["loss"])
        out["loss"].backward()
        trainable = tuple(m + "." for m in obj.trainable_modules())
        got_grad = set()
        for name, p in obj.named_parameters():
            assert p.requires_grad == name.startswith(trainable), name
            if not p.requires_grad:
                assert p.grad is None, name
            elif p.grad is not None and p.grad.abs().sum() > 0:
                got_grad.add(name)
        for module in obj.trainable_modules():  # every trained module learns something
            assert any(n.startswith(module + ".") for n in got_grad), module
    prefixes = obj.transferable_prefixes()
    assert "encoder." in prefixes and not any("seg_layers" in p for p in prefixes)
    trained = tuple(m + "." for m in obj.trained_modules())
    assert all(("network." + p).startswith(trained) for p in prefixes)  # only trained parts


# ------------------------------------------------------------------------------ restoration


def test_regression_swaps_keep_each_image_histogram(tiny):
    paths, plans = tiny
    obj = get_objective("regression").create(make_setup(paths, plans, "2d"),
                                             {"num_swaps": 3, "swap_size": (4,)})
    assert obj.hyperparameters()["swap_size"] == [4, 4]
    batch = first_batch(obj)
    data, target = batch["data"].numpy(), batch["target"].numpy()
    for x, y in zip(data, target):
        assert not np.array_equal(x, y)
        np.testing.assert_array_equal(np.sort(x, axis=None), np.sort(y, axis=None))
        assert (x != y).sum() <= 2 * 3 * 4 * 4  # only the swapped boxes change


def test_default_swap_boxes_are_isotropic_in_mm(tiny):
    paths, plans = tiny
    setup = make_setup(paths, plans, "3d_fullres")
    obj = get_objective("regression").create(setup)
    # spacing (3, 1, 1) mm: 5 voxels in-plane, 5 mm / 3 mm -> 2 slices; 1.36 % of 4x24x24
    assert obj.swap_size == (2, 5, 5) and obj.num_swaps == 1
    with pytest.raises(InputError, match="do not fit"):  # 2 x 20 x 50 voxels > 25 % of 2304
        get_objective("regression").create(setup, {"num_swaps": 20})


def test_mae_hides_the_asked_share_of_blocks_and_scores_only_them(tiny):
    paths, plans = tiny
    obj = get_objective("mae").create(make_setup(paths, plans, "2d"), {"mask_ratio": 0.75})
    assert obj.block_size == (3, 3)  # 24 // 8 per axis
    batch = first_batch(obj)
    mask, data, target = batch["mask"], batch["data"], batch["target"]
    assert mask.dtype == torch.bool and mask.shape == (4, 1, 24, 24)
    assert torch.all(data[mask.expand_as(data)] == 0)
    assert torch.equal(data[~mask.expand_as(data)], target[~mask.expand_as(data)])
    assert torch.allclose(mask.float().mean(dim=(1, 2, 3)), torch.full((4,), 48 / 64))
    pred = torch.randn_like(target)
    changed = torch.where(mask, pred, pred + 5.0)  # differs only where nothing is scored
    assert torch.isclose(obj.restoration_loss(pred, batch), obj.restoration_loss(changed, batch))
    assert torch.isclose(obj.restoration_loss(pred, batch),
                         ((pred - target)[mask.expand_as(pred)] ** 2).mean())


def test_genesis_target_is_the_clean_patch(tiny):
    paths, plans = tiny
    setup = make_setup(paths, plans, "3d_fullres")
    off = {"p_nonlinear": 0.0, "p_local_shuffle": 0.0, "p_paint": 0.0}
    batch = first_batch(get_objective("genesis").create(setup, off))
    assert torch.equal(batch["data"], batch["target"])
    batch = first_batch(get_objective("genesis").create(setup))
    assert batch["data"].shape == batch["target"].shape == (4, 1, 4, 24, 24)
    assert not torch.equal(batch["data"], batch["target"])


# ------------------------------------------------------------------------------ contrastive


@pytest.mark.parametrize("config", CONFIGS)
def test_partial_decoder_matches_the_full_forward(tiny, config):
    paths, plans = tiny
    obj = get_objective("contrastive").create(make_setup(paths, plans, config))
    net = obj.network
    x = torch.randn(2, 1, *plans.configurations[config].patch_size)
    _, skips, dec = net.forward_with_features(x)
    for level in range(len(dec)):
        assert torch.allclose(net.decode_to(skips, level), dec[level], atol=1e-6)
    assert obj.level == 1 and obj.decoder_levels == (1,)  # 1/4 in-plane: one block of two
    assert obj.hyperparameters()["trained_decoder_blocks"] == [0]


def test_default_local_level_is_a_quarter_of_the_in_plane_resolution():
    six_2d = [(1, 1)] + [(2, 2)] * 5  # Chaitanya et al.'s 6-level 2D U-Net
    assert default_local_level(six_2d) == 2  # 3 of 5 decoder blocks trained
    aniso = [(1, 1, 1), (1, 2, 2), (1, 2, 2), (2, 2, 2), (2, 2, 2)]
    assert default_local_level(aniso) == 2
    assert default_local_level([(1, 1), (2, 2)]) == 0  # too shallow: the deepest level


def test_global_batches_are_volumes_times_partitions_with_views(tiny):
    paths, plans = tiny
    obj = get_objective("contrastive").create(make_setup(paths, plans, "2d"))
    batch = first_batch(obj, batch_size=8)  # 8 // 4 partitions = 2 volumes
    assert batch["data_view1"].shape == batch["data_view2"].shape == (8, 1, 24, 24)
    assert batch["partition_ids"].tolist() == [0, 1, 2, 3] * 2
    vols = batch["volume_ids"].tolist()
    assert vols[:4] == [vols[0]] * 4 and vols[4:] == [vols[4]] * 4 and vols[0] != vols[4]
    assert not torch.equal(batch["data_view1"], batch["data_view2"])
    loss_gd = obj(batch)["loss"]
    minus = get_objective("contrastive").create(make_setup(paths, plans, "2d"),
                                                {"strategy": "GD-"})
    assert not torch.isclose(loss_gd, minus(batch)["loss"])


def test_local_views_share_geometry(tiny):
    paths, plans = tiny
    obj = get_objective("contrastive").create(make_setup(paths, plans, "2d"))
    obj.set_stage("local")
    batch = first_batch(obj)
    v1, v2 = batch["data_view1"], batch["data_view2"]
    assert "view2_flips" in batch  # default: view 2 mirrored, the flips recorded
    v2 = unmirror(v2, batch["view2_flips"], 2)
    # once mapped back: same anatomy, so the views stay strongly correlated voxel-wise
    for a, b in zip(v1, v2):
        assert np.corrcoef(a.flatten(), b.flatten())[0, 1] > 0.8
    paper = get_objective("contrastive").create(make_setup(paths, plans, "2d"),
                                                {"local_views": "intensity"})
    paper.set_stage("local")
    assert "view2_flips" not in first_batch(paper)
    assert obj.transferable_prefixes() == ("encoder.", "decoder.transpconvs.0.",
                                           "decoder.stages.0.")


def _write_ramp_case(folder, case_id, depth, size=(6, 6)):
    """A case whose every voxel of slice z equals z (channel 0) and 100 + z (channel 1)."""
    z = np.arange(depth, dtype=np.float32)[:, None, None] * np.ones(size, np.float32)
    props = CaseProperties(case_id, "imagesUnlabeled", (1.0,) * 3, (0.0,) * 3,
                           tuple(np.eye(3).ravel()), (depth, *size),
                           tuple((0, s) for s in (depth, *size)), (depth, *size), (1.0,) * 3,
                           (1.0,) * 3, (depth, *size), False)
    save_case(folder, np.stack([z, z + 100]), None, props)


def test_partition_sampler_draws_one_slice_from_each_partition(tmp_path):
    depths = {"a": 12, "b": 9, "c": 3, "d": 20}
    for case_id, depth in depths.items():
        _write_ramp_case(tmp_path, case_id, depth)
    loader = PartitionBatchLoader(tmp_path, list(depths), (4, 4), num_volumes=3, ndim=2,
                                  num_partitions=4, seed=0)
    seen: dict[tuple[str, int], set] = {}
    for _ in range(60):
        batch = loader.generate_train_batch()
        assert batch["data"].shape == (12, 2, 4, 4)
        assert batch["partition_ids"].tolist() == [0, 1, 2, 3] * 3
        vols = batch["volume_ids"].reshape(3, 4)  # (m, S)
        assert (vols == vols[:, :1]).all() and len(set(vols[:, 0].tolist())) == 3
        for row, case_id, part in zip(batch["data"], batch["keys"], batch["partition_ids"]):
            z = row[0, 0, 0]
            assert np.all(row[0] == z) and np.all(row[1] == z + 100)  # one whole slice
            depth = depths[case_id]
            assert int(part) * depth // 4 <= z <= ((int(part) + 1) * depth - 1) // 4
            seen.setdefault((case_id, int(part)), set()).add(int(z))
    # every slice of a partition is drawn: 20 slices -> 5 per partition
    assert all(seen[("d", p)] == set(range(5 * p, 5 * p + 5)) for p in range(4))


def test_partition_sampler_3d_takes_sub_volumes_along_the_slice_axis(tmp_path):
    _write_ramp_case(tmp_path, "a", 16)
    loader = PartitionBatchLoader(tmp_path, ["a"], (3, 4, 4), num_volumes=5, ndim=3,
                                  seed=1)
    assert loader.num_volumes == 1  # clipped to the number of volumes
    for _ in range(20):
        batch = loader.generate_train_batch()
        assert batch["data"].shape == (4, 2, 3, 4, 4)
        for row, part in zip(batch["data"], batch["partition_ids"]):
            zs = row[0, :, 0, 0]
            assert np.array_equal(np.diff(zs), [1, 1])  # consecutive slices
            assert 4 * int(part) <= zs[1] <= 4 * int(part) + 3  # centred in its partition


def test_partition_position_covers_each_partition_uniformly():
    rng = np.random.default_rng(0)
    draws = [partition_position(10, 1, 4, rng) for _ in range(2000)]
    counts = np.bincount(draws, minlength=10)
    assert set(np.nonzero(counts)[0]) == {2, 3, 4}  # [2.5, 5) of 10 slices -> 2, 3, 4
    assert abs(counts[3] / 2000 - 0.4) < 0.05  # slice 3 is inside [2.5, 5) for 1 of 2.5
    assert {partition_position(2, p, 4, rng) for p in range(4)} <= {0, 1}  # thin stacks


# ------------------------------------------------------------------------------ refs


def test_refs_gradient_matching_term_reaches_the_matched_parameters(tiny):
    paths, plans = tiny
    setup = make_setup(paths, plans, "2d")
    batch = first_batch(get_objective("refs").create(setup))
    grads = {}
    for lam in (0.0, 1.0):
        obj = get_objective("refs").create(setup, {"lambda_gm": lam, "match_stages": 1})
        out = obj(batch)
        out["loss"].backward()
        grads[lam] = [p.grad.clone() for p in obj.matched_parameters()]
        if lam:
            assert 0.0 <= float(out["gm_loss"]) <= 2.0
            assert torch.isclose(out["loss"], out["ssl_loss"] + out["ref_loss"] + out["gm_loss"])
    assert any(not torch.allclose(a, b) for a, b in zip(grads[0.0], grads[1.0]))
    assert len(obj.matched_parameters()) == len(list(obj.network.encoder.stages[-1].parameters()))
    obj.eval()
    with torch.no_grad():
        assert "gm_loss" not in obj(batch)  # validation: no gradients to match


def test_refs_is_refused_under_torchrun_and_with_other_plans(tiny, tmp_path):
    paths, plans = tiny
    setup = make_setup(paths, plans, "2d")
    with pytest.raises(InputError, match="torchrun"):
        get_objective("refs").create(dataclasses.replace(setup, distributed=True))
    # a second dataset with the same plans is a valid reference ...
    same = paths.preprocessed / "Dataset902_Same"
    shutil.copytree(paths.preprocessed / plans.dataset_name, same)
    obj = get_objective("refs").create(setup, {"reference": "902"})
    assert obj.reference.dataset == "Dataset902_Same" and len(obj.reference.case_ids) == 4
    assert obj.hyperparameters()["reference_dataset"] == "Dataset902_Same"
    # ... one planned with another architecture is not
    other = plans.replace(configurations={**plans.configurations, "2d": dataclasses.replace(
        plans.configurations["2d"], features_per_stage=(8, 16, 32))})
    (paths.preprocessed / "Dataset903_Other").mkdir()
    other.save(paths.preprocessed / "Dataset903_Other" / "plans.json")
    with pytest.raises(InputError, match="another architecture.*features_per_stage"):
        get_objective("refs").create(setup, {"reference": "Dataset903_Other"})
    with pytest.raises(InputError, match="no dataset matches"):
        get_objective("refs").create(setup, {"reference": "Nope"})


# ------------------------------------------------------------------------------ small parts


def test_grid_pool_keeps_the_layout_that_instance_norm_hides():
    x = torch.randn(3, 5, 8, 8)
    normed = torch.nn.functional.instance_norm(x)
    pooled = grid_pool(normed, (2, 2))
    assert pooled.shape == (3, 20)
    # the global mean of an instance-normalised map is 0 for every image: no information
    assert torch.allclose(normed.mean(dim=(2, 3)), torch.zeros(3, 5), atol=1e-5)
    assert pooled.std(dim=0).mean() > 0.1  # the grid cells still differ between images
    ref = normed.reshape(3, 5, 2, 4, 2, 4).mean(dim=(3, 5)).flatten(1)  # naive 2x2 pooling
    assert torch.allclose(pooled, ref, atol=1e-6)


def test_zip_stream_prefixes_and_closes():
    class Stream:
        def __init__(self, value):
            self.value, self.closed = value, False

        def __next__(self):
            return {"data": self.value}

        def close(self):
            self.closed = True

    a, b = Stream(1), Stream(2)
    zipped = ZipStream({"": a, "ref_": b})
    assert next(zipped) == {"data": 1, "ref_data": 2}
    zipped.close()
    assert a.closed and b.closed
