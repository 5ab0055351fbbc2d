"""Tests for sslunet.cli._objective_flags: ``sslunet_pretrain`` makes its flags from the
objectives' self-describing options.

No dataset here: these tests only build parsers and options dataclasses.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import pytest

from sslunet.cli._objective_flags import collect_flags, flag_name
from sslunet.cli.pretrain import build_parser, objective_options
from sslunet.ssl.objectives import OBJECTIVES, get_objective, list_objectives
from sslunet.ssl.objectives.options import (
    HELP, format_default, option, option_specs, parse_options,
)
from sslunet.utils.argtypes import positive_float, probability
from tests.helpers.pretraining import fake_objective


REQUIRED = ["-d", "x", "-l"]


def _action(parser, flag):
    return parser._option_string_actions[flag]


def _example(spec) -> str:
    # the default as a command line gives it; "1" where the default is None (every such
    # option today is a count or a box edge, for which 1 is valid)
    return "1" if spec.default is None else format_default(spec.default)


@pytest.mark.parametrize("objective", list_objectives())
def test_every_option_is_described_and_has_its_flag(objective):
    parser = build_parser()
    options_cls = get_objective(objective).Options
    specs = {s.name: s for s in option_specs(options_cls)}
    for field in dataclasses.fields(options_cls):
        assert field.metadata.get(HELP), f"{objective}: {field.name} has no help"
        action = _action(parser, flag_name(field.name))
        assert action.dest == field.name and action.default is None  # unset: not passed on
        expanded = action.help % {}  # what --help prints ('%%' -> '%')
        assert specs[field.name].help in expanded and objective in expanded
        assert f"default: {specs[field.name].default_text}" in expanded
        if field.default is not None:
            assert format_default(field.default) == specs[field.name].default_text


@pytest.mark.parametrize("objective", list_objectives())
def test_pretrain_parser_accepts_each_objectives_flags(objective):
    parser, options_cls = build_parser(), get_objective(objective).Options
    argv, expected = REQUIRED + [objective], {}
    for spec in option_specs(options_cls):
        args = parser.parse_args(REQUIRED + [objective, flag_name(spec.name), _example(spec)])
        value = getattr(args, spec.name)
        if spec.default is not None:
            assert value == spec.default  # the default in the help parses back to itself
        assert objective_options(args) == {spec.name: value}
        argv += [flag_name(spec.name), _example(spec)]
        expected[spec.name] = value
    args = parser.parse_args(argv)
    assert objective_options(args) == expected
    assert isinstance(parse_options(objective, options_cls, expected), options_cls)
    assert objective_options(parser.parse_args(REQUIRED + [objective])) == {}


def test_shared_options_are_one_flag():
    flags = collect_flags(OBJECTIVES)
    for name in ("temperature", "proj_dim", "proj_hidden", "crop_min"):
        assert [o for o, _ in flags[name].uses] == ["contrastive", "refs", "simclr"]
    parser = build_parser()
    declared = [s for a in parser._actions for s in a.option_strings]
    assert len(declared) == len(set(declared))


def test_an_option_parsed_differently_by_two_objectives_fails_loudly():
    same = {"a": fake_objective(tau=option(0.1, "tau", positive_float)),
            "b": fake_objective(tau=option(0.5, "tau", positive_float))}
    help_text = collect_flags(same)["tau"].help()
    assert "defaults: a: 0.1; b: 0.5" in help_text  # one flag, each objective's default
    clash = {"a": same["a"], "b": fake_objective(tau=option(0.1, "tau", probability))}
    with pytest.raises(ValueError, match="'a' and 'b' both have option 'tau'.*--tau"):
        collect_flags(clash)
    choices = {"a": fake_objective(kind=option("x", "kind", choices=("x", "y"))),
               "b": fake_objective(kind=option("x", "kind", choices=("x", "z")))}
    with pytest.raises(ValueError, match="parse it differently"):
        collect_flags(choices)


@dataclass(frozen=True)
class _Described:
    share: float = option(0.25, "a share, in %")


def test_percent_signs_in_help_survive_argparse():
    flags = collect_flags({"x": type("X", (), {"Options": _Described})})
    assert flags["share"].help() % {} == "a share, in % [x] (default: 0.25)"
