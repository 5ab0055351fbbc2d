"""Tests for sslunet.plans: plans and fingerprints survive their JSON round trip; a file of
another schema version and hand-edited plans that cannot work are refused, naming the file.

The fingerprints and plans are the planner tests' hand-built ones (fixture ``planned``, see
:mod:`tests.helpers.fingerprints`); the hand-edited plans are the tiny dataset's.
"""

from __future__ import annotations

import pytest

from sslunet.errors import InputError
from sslunet.plans import Fingerprint, Plans
from tests.helpers.damage import edit_plans
from tests.helpers.datasets import DATASET, tiny_home


def test_plans_and_fingerprint_json_round_trip(tmp_path, planned):
    fp, plans = planned["mixed_spacing"]
    fp.save(tmp_path / "fingerprint.json")
    plans.save(tmp_path / "plans.json")
    fp2 = Fingerprint.load(tmp_path / "fingerprint.json")
    plans2 = Plans.load(tmp_path / "plans.json")
    assert fp2 == fp
    assert plans2 == plans
    assert isinstance(plans2.configurations["3d_fullres"].patch_size, tuple)
    assert Plans.from_dict(plans.to_dict()) == plans


def test_wrong_schema_version_is_input_error(tmp_path, planned):
    import json

    fp, plans = planned["tiny"]
    for obj, cls, name in ((fp, Fingerprint, "fingerprint.json"), (plans, Plans, "plans.json")):
        obj.save(tmp_path / name)
        data = json.loads((tmp_path / name).read_text())
        data["schema_version"] = 99
        (tmp_path / name).write_text(json.dumps(data))
        with pytest.raises(InputError, match="schema_version 99") as err:
            cls.load(tmp_path / name)
        assert name in str(err.value)


def test_plans_problems_name_plans_json(tmp_path_factory, tmp_path):
    home = tmp_path / "home"
    tiny_home(tmp_path_factory, home)
    path = home / "preprocessed" / DATASET / "plans.json"
    original = path.read_text()
    for changes, words in (({"patch_size": [0, 32]}, "patch_size"),
                           ({"spacing": [0.9, -1.0]}, "spacing"),
                           ({"n_conv_per_stage_encoder": [1, 1]}, "n_conv_per_stage_encoder"),
                           ({"conv_kernel_sizes": [[3, 3], [2, 2], [3, 3]]}, "odd"),
                           ({"normalization_schemes": []}, "normalization_schemes"),
                           ({"batch_size": 1.5}, "batch_size")):
        edit_plans(home, **changes)
        with pytest.raises(InputError, match=words) as err:
            Plans.load(path)
        assert err.value.path == str(path) and "\n" not in str(err.value)
        path.write_text(original)
    Plans.load(path)  # the planner's own plans are valid
