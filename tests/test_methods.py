"""The method registry (unlearn/methods/), each method's own settings in the config, and the CLI
options derived from them."""

from __future__ import annotations

import argparse
import pkgutil
from pathlib import Path

import pytest
from pydantic import ValidationError

import lune.unlearn.methods as methods_package
from lune.data.errors import LuneError
from lune.flows.config import load_config
from lune.unlearn.config import UnlearnConfig
from lune.unlearn.methods import METHODS
from lune.unlearn.methods.idk import IdkOptions
from lune.unlearn.methods.npo import NpoOptions
from lune.unlearn.trainer import REGISTRY, UnlearnTrainer


def test_each_module_of_the_methods_folder_registers_its_method() -> None:
    modules = {m.name for m in pkgutil.iter_modules(methods_package.__path__)}
    expected = {"lune", "grad_ascent", "grad_diff", "npo", "idk", "full_ft", "simnpo", "rmu", "grun", "llmeraser"}
    assert modules == set(METHODS) == expected
    for name, cls in METHODS.items():
        assert cls.name == name and cls.__module__ == f"lune.unlearn.methods.{name}"
    assert next(iter(METHODS)) == "lune"  # LUNE first: the default, and the first choice shown


def test_defining_a_method_class_registers_it_and_a_name_is_taken_once() -> None:
    class Toy(UnlearnTrainer):
        name = "toy"

    try:
        assert REGISTRY.get("toy") is Toy
        assert Toy.options_section(method="toy").method == "toy"  # its member of the options union
        with pytest.raises(ValueError, match="'toy' is defined twice"):
            type("AnotherToy", (UnlearnTrainer,), {"name": "toy"})
    finally:
        REGISTRY._entries.pop("toy")


def test_method_options_are_typed_per_method() -> None:
    npo = UnlearnConfig(method="npo", method_options={"beta": 0.3})
    assert isinstance(npo.method_options, NpoOptions) and npo.method_options.beta == 0.3
    assert isinstance(UnlearnConfig(method="idk").method_options, IdkOptions)  # the method's defaults
    assert UnlearnConfig(method="npo", method_options=NpoOptions(beta=0.4)).method_options.beta == 0.4
    # The tag is set from `method` and not written out: a dump reads back as the same config.
    assert npo.model_dump()["method_options"] == {"beta": 0.3}
    assert UnlearnConfig.model_validate(npo.model_dump()) == npo
    npo.learning_rate = 0.5  # assignment is validated, and leaves the options as they are
    assert isinstance(npo.method_options, NpoOptions) and npo.method_options.beta == 0.3
    with pytest.raises(ValidationError, match="method_options are for method 'npo', not 'idk'"):
        npo.method = "idk"


@pytest.mark.parametrize(
    ("settings", "location"),
    [
        ({"method": "idk", "method_options": {"beta": 0.2}}, ("method_options", "idk", "beta")),  # npo's, not idk's
        ({"method": "npo", "method_options": {"beta": -1}}, ("method_options", "npo", "beta")),
        ({"method": "magic"}, ("method",)),
    ],
)
def test_a_bad_method_or_option_names_its_key(settings: dict, location: tuple) -> None:
    with pytest.raises(ValidationError) as err:
        UnlearnConfig(**settings)
    assert [e["loc"] for e in err.value.errors()] == [location]


def test_an_unknown_option_in_a_config_file_names_the_key_path(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("unlearn:\n  method: npo\n  method_options:\n    betta: 0.2\n", encoding="utf-8")
    with pytest.raises(LuneError, match=r"unlearn\.method_options\.npo\.betta: Extra inputs are not permitted"):
        load_config(path)
    path.write_text("unlearn:\n  method: lune\n  method_options: {method: npo}\n", encoding="utf-8")
    with pytest.raises(LuneError, match="method_options are for method 'npo', not 'lune'"):
        load_config(path)


def test_per_method_carries_method_options_to_their_method_only() -> None:
    config = UnlearnConfig(
        method="npo",
        method_options={"beta": 0.2},
        per_method={"idk": {"learning_rate": 1e-4}, "npo": {"method_options": {"beta": 0.5}}},
    )
    assert config.for_method().method_options.beta == 0.5
    idk = config.for_method("idk")  # npo's beta does not follow it to idk
    assert isinstance(idk.method_options, IdkOptions) and idk.learning_rate == 1e-4
    with pytest.raises(ValueError, match=r"per_method\.idk: method_options\.idk\.beta"):
        UnlearnConfig(per_method={"idk": {"method_options": {"beta": 0.1}}})


def test_grad_diff_refuses_a_second_nll_retain_term() -> None:
    with pytest.raises(ValidationError, match="grad_diff already descends on retain facts"):
        UnlearnConfig(method="grad_diff", retain_anchor="nll")
    assert UnlearnConfig(method="grad_diff", retain_anchor="kl").retain_anchor == "kl"


# -- lune unlearn options ------------------------------------------------------------------------


def unlearn_settings(*argv: str) -> dict:
    from lune.commands import unlearn

    parser = argparse.ArgumentParser(exit_on_error=False)
    unlearn.add_arguments(parser)
    return unlearn.settings_from_args(parser.parse_args(["--dataset", "d", "--model", "m", *argv]))


def test_the_unlearn_command_takes_every_setting_from_the_config_model() -> None:
    settings = unlearn_settings("--method", "npo", "--npo-beta", "0.2", "--lr", "1e-4", "--lora-rank", "4", "--merge")
    config = UnlearnConfig.model_validate(settings)
    assert (config.method, config.method_options.beta, config.learning_rate) == ("npo", 0.2, 1e-4)
    assert config.lora.rank == 4 and config.merge
    assert unlearn_settings() == {}  # nothing given: the model's defaults
    assert unlearn_settings("--method", "idk", "--idk-refusals", "No idea.")["method_options"] == {
        "refusals": ["No idea."]
    }


def test_a_method_setting_for_another_method_is_refused() -> None:
    with pytest.raises(LuneError, match="--npo-beta: a setting of method npo, and the method is lune"):
        unlearn_settings("--npo-beta", "0.2")


def test_switching_the_method_of_a_config_drops_its_method_options(tmp_path: Path) -> None:
    path = tmp_path / "npo.yaml"
    path.write_text("unlearn:\n  method: npo\n  method_options: {beta: 0.3}\n", encoding="utf-8")
    assert unlearn_settings("--config", str(path))["method_options"] == {"beta": 0.3}
    switched = UnlearnConfig.model_validate(unlearn_settings("--config", str(path), "--method", "idk"))
    assert isinstance(switched.method_options, IdkOptions)


# -- SimNPO and RMU ------------------------------------------------------------------------------


def test_simnpo_and_rmu_defaults_are_open_unlearnings() -> None:
    from lune.unlearn.methods.rmu import RmuOptions, default_layer, default_steering
    from lune.unlearn.methods.simnpo import SimNpoOptions

    simnpo = UnlearnConfig(method="simnpo")
    assert isinstance(simnpo.method_options, SimNpoOptions)
    # configs/trainer/SimNPO.yaml: beta 4.5, delta 0, gamma (forget weight) 0.125, alpha (retain) 1
    assert (simnpo.method_options.beta, simnpo.method_options.delta, simnpo.method_options.forget_weight) == (
        4.5,
        0.0,
        0.125,
    )
    assert simnpo.retain_weight == 1.0
    with pytest.raises(ValidationError, match="simnpo already descends on retain facts"):
        UnlearnConfig(method="simnpo", retain_anchor="nll")
    rmu = UnlearnConfig(method="rmu")
    assert isinstance(rmu.method_options, RmuOptions) and rmu.method_options.layer is None
    # a third of the depth; configs/trainer/RMU.yaml's c = 2 at width 4096, scaled by sqrt(width)
    assert [default_layer(n) for n in (1, 4, 30, 32)] == [0, 1, 10, 10]
    assert (default_steering(4096), default_steering(256), default_steering(576)) == pytest.approx((2.0, 0.5, 0.75))


def test_the_rmu_control_vector_is_seeded_nonnegative_and_of_norm_c() -> None:
    import torch

    from lune.unlearn.methods.rmu import control_vector

    state = torch.get_rng_state()
    vector = control_vector(256, 0.5, seed=3)
    assert torch.equal(torch.get_rng_state(), state)  # the global random state is left alone
    assert vector.shape == (256,) and (vector >= 0).all()
    assert vector.norm().item() == pytest.approx(0.5)
    assert torch.equal(vector, control_vector(256, 0.5, seed=3))
    assert not torch.equal(vector, control_vector(256, 0.5, seed=4))


def test_simnpo_and_rmu_settings_on_the_command_line() -> None:
    settings = unlearn_settings("--method", "rmu", "--rmu-layer", "2", "--rmu-steering-coeff", "1.5")
    config = UnlearnConfig.model_validate(settings)
    assert (config.method_options.layer, config.method_options.steering_coeff) == (2, 1.5)
    config = UnlearnConfig.model_validate(unlearn_settings("--method", "simnpo", "--simnpo-delta", "0.5"))
    assert config.method_options.delta == 0.5 and config.method_options.beta == 4.5
