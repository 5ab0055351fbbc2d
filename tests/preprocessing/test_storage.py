"""Tests for sslunet.preprocessing.storage: the on-disk case format."""

from __future__ import annotations

import numpy as np

from sslunet.preprocessing.storage import (
    CaseProperties,
    case_paths,
    is_case_done,
    list_cases,
    load_case,
    save_case,
)
from sslunet.utils.atomic import save_npy


EYE = tuple(float(v) for v in np.eye(3).ravel())


def _props(case_id, source, has_seg=True):
    return CaseProperties(case_id, source, (1.0, 1.0, 1.0), (0.0, 0.0, 0.0), EYE, (2, 3, 4),
                          ((0, 2), (0, 3), (0, 4)), (2, 3, 4), (1.0, 1.0, 1.0),
                          (1.0, 1.0, 1.0), (2, 3, 4), has_seg, {"1": [[0, 1, 2]]})


def test_save_load_case_with_mmap(tmp_path):
    data = np.arange(48, dtype=np.float64).reshape(2, 2, 3, 4)
    seg = (np.arange(24).reshape(1, 2, 3, 4) % 3 - 1).astype(np.int16)
    save_case(tmp_path, data, seg, _props("a", "imagesTr"))
    d, s, p = load_case(tmp_path, "a")
    assert isinstance(d, np.memmap) and isinstance(s, np.memmap)
    assert d.dtype == np.float32 and s.dtype == np.int8
    np.testing.assert_array_equal(d, data)
    np.testing.assert_array_equal(s, seg)
    assert p == _props("a", "imagesTr")
    d, s, _ = load_case(tmp_path, "a", mmap=False)
    assert not isinstance(d, np.memmap)
    # re-saving without a label (now unlabeled) removes the stale _seg file
    save_case(tmp_path, data, None, _props("a", "imagesUnlabeled", has_seg=False))
    assert load_case(tmp_path, "a")[1] is None
    assert not case_paths(tmp_path, "a")[1].exists()


def test_is_case_done_only_with_properties(tmp_path):
    data_p, _, props_p = case_paths(tmp_path, "b")
    save_npy(data_p, np.zeros((1, 2, 2, 2)))
    assert not is_case_done(tmp_path, "b")
    assert list_cases(tmp_path) == []
    save_case(tmp_path, np.zeros((1, 2, 3, 4)), None, _props("b", "imagesTr", False))
    assert is_case_done(tmp_path, "b")
    props_p.unlink()
    assert not is_case_done(tmp_path, "b")


def test_list_cases_by_source_ignores_leftovers(tmp_path):
    for cid, src in (("u1", "imagesUnlabeled"), ("t1", "imagesTr"), ("t0", "imagesTr"),
                     ("s1", "imagesTs")):
        save_case(tmp_path, np.zeros((1, 2, 3, 4)), None, _props(cid, src, False))
    (tmp_path / ".x9.npy.tmp-abc123.npy").write_bytes(b"partial")
    (tmp_path / ".x9.json.tmp-abc123").write_text("{")
    save_npy(tmp_path / "x8.npy", np.zeros(3))  # data without properties: unfinished
    assert list_cases(tmp_path) == ["s1", "t0", "t1", "u1"]
    assert list_cases(tmp_path, ("imagesTr",)) == ["t0", "t1"]
    assert list_cases(tmp_path, ("imagesUnlabeled", "imagesTs")) == ["s1", "u1"]
    assert list_cases(tmp_path / "missing") == []
