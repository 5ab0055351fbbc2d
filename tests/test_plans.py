"""Tests for sslunet.plans: plans and fingerprints survive their JSON round trip, and a file of
another schema version is refused.

The fingerprints and plans are the planner tests' hand-built ones (fixture ``planned``, see
:mod:`tests.helpers.fingerprints`).
"""

from __future__ import annotations

import pytest

from sslunet.errors import InputError
from sslunet.plans import Fingerprint, Plans


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
