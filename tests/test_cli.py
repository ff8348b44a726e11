"""Each config key is declared once: every launcher flag maps to exactly one config key and back."""

import pytest

from sdbnn.engine import cli
from sdbnn.engine.config import CIFAR, IMAGENET, TrainConfig, config_fields, field_type

PARSERS = {CIFAR: cli.cifar_parser, IMAGENET: cli.imagenet_parser}


def sample_argv(parser, flag: str) -> list[str]:
    """A command line giving ``flag`` one valid value."""
    action = parser._option_string_actions[flag]
    if action.nargs == 0:
        return [flag]
    if action.choices:
        return [flag, list(action.choices)[-1]]
    count = action.nargs if isinstance(action.nargs, int) else 1
    value = {int: "3", float: "0.5"}.get(action.type, "x")
    return [flag, *[value] * count]


@pytest.mark.parametrize("launcher", [CIFAR, IMAGENET])
def test_every_flag_maps_to_exactly_one_config_key(launcher):
    parser, flags = PARSERS[launcher]()
    options = [flag for flag in parser._option_string_actions if flag not in ("-h", "--help")]
    for flag in options:
        if flag in cli.RUN_CONTROL[launcher]:
            assert flag not in flags
            continue
        argv = sample_argv(parser, flag)
        given = cli.given_values(parser.parse_args(argv), flags)
        keys = [f"model_options.{key}" for key in given.pop("model_options", {})] + list(given)
        assert keys == [flags[flag]], f"{flag} sets {keys}, expected {flags[flag]}"
    assert set(flags) == set(options) - set(cli.RUN_CONTROL[launcher])


@pytest.mark.parametrize("launcher", [CIFAR, IMAGENET])
def test_every_offered_config_key_has_its_flag(launcher):
    parser, flags = PARSERS[launcher]()
    offered = {item.name for item in config_fields() if launcher in item.metadata["launchers"]}
    assert offered <= set(TrainConfig.__dataclass_fields__)
    for key in offered:
        flag = cli.flag_of(key)
        assert flags.get(flag) == key, f"config key {key} has no flag {flag}"
        assert parser._option_string_actions[flag].help == config_fields()[
            [item.name for item in config_fields()].index(key)].metadata["help"]
    if launcher == CIFAR:
        for key in cli.MODEL_OPTION_FLAGS:
            assert flags[cli.flag_of(key)] == f"model_options.{key}"
    # every key is reachable from the command line of some launcher, except the per-model options dict itself
    reachable = {key for build in PARSERS.values() for key in build()[1].values()}
    unreachable = {item.name for item in config_fields()} - reachable - {"model_options"}
    assert not unreachable, unreachable


def test_given_flags_override_the_recipe_and_the_rest_keeps_it(tmp_path):
    config, _ = cli.cifar_config(["--model", "vgg_small", "--epochs", "7", "--no-asd", "--no-wsd"])
    assert (config.model, config.epochs, config.lr, config.t_min) == ("vgg_small", 7, 0.08, 0.1)  # recipe lr, t_min
    assert config.model_options == {"asd": "off", "wsd": False}
    assert cli.cifar_config(["--asd", "static"])[0].model_options == {"asd": "static"}
    with pytest.raises(ValueError, match="contradict"):
        cli.cifar_config(["--no-asd", "--static-asd"])
    assert field_type(config_fields()[0]) is str

