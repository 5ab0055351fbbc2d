"""Tests for sslunet.ssl.objectives.options: options are described, validated and their errors
name the option (and, through the CLI's flag names, the flag)."""

from __future__ import annotations

import pytest

from sslunet.cli._objective_flags import flag_name
from sslunet.errors import InputError
from sslunet.ssl.objectives import get_objective
from sslunet.ssl.objectives.base import NoOptions
from sslunet.ssl.objectives.contrastive import ContrastiveObjective, ContrastiveOptions
from sslunet.ssl.objectives.options import (
    OptionError, OptionNotApplicable, option, option_specs, parse_options,
)
from sslunet.ssl.objectives.refs import RefsOptions
from tests.helpers.pretraining import fake_objective


def test_options_are_validated_with_the_option_name():
    opts_cls = get_objective("mae").Options
    assert parse_options("mae", opts_cls, {"mask_ratio": 0.75}).mask_ratio == 0.75
    with pytest.raises(InputError, match="option temperature does not apply to objective 'mae'"):
        parse_options("mae", opts_cls, {"temperature": 0.2})
    with pytest.raises(InputError, match="mask_ratio must be in"):
        parse_options("mae", opts_cls, {"mask_ratio": 1.5})
    with pytest.raises(InputError, match="strategy"):
        parse_options("contrastive", ContrastiveObjective.Options, {"strategy": "GR"})


def test_an_undescribed_option_is_refused():
    with pytest.raises(TypeError, match="tau must be declared with option"):
        option_specs(fake_objective(tau=0.1).Options)
    with pytest.raises(TypeError, match="default_text"):
        option_specs(fake_objective(size=option(None, "size")).Options)
    assert option_specs(NoOptions) == []


def test_option_errors_name_the_option_and_the_cli_its_flag():
    with pytest.raises(OptionNotApplicable) as e:
        parse_options("mae", get_objective("mae").Options, {"temperature": 0.2})
    assert str(e.value) == ("option temperature does not apply to objective 'mae' (its "
                            "options: block_size, mask_ratio)")
    assert e.value.describe(flag_name) == ("option --temperature does not apply to objective "
                                           "'mae' (its options: --block-size, --mask-ratio)")
    with pytest.raises(OptionError) as e:
        parse_options("contrastive", ContrastiveOptions, {"local_epochs_fraction": 1.0})
    assert isinstance(e.value, InputError) and "\n" not in str(e.value)
    assert str(e.value).endswith("local_epochs_fraction must be in (0, 1), got 1.0")
    assert e.value.describe(flag_name) == ("invalid option for objective 'contrastive': "
                                           "--local-epochs-fraction must be in (0, 1), got 1.0")
    with pytest.raises(OptionError, match="strategy must be GD or GD-, got 'GR'"):
        parse_options("contrastive", ContrastiveOptions, {"strategy": "GR"})
    with pytest.raises(OptionError, match="ssl_loss must be simclr, got 'byol'"):
        parse_options("refs", RefsOptions, {"ssl_loss": "byol"})
