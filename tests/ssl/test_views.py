"""Tests for sslunet.ssl.views: the G^D partition sampler and the zipped batch streams."""

from __future__ import annotations

import numpy as np
import pytest

from sslunet.preprocessing.storage import CaseProperties, save_case
from sslunet.ssl.views import PartitionBatchLoader, ZipStream, partition_position


pytestmark = pytest.mark.usefixtures("one_torch_thread")


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
