"""RunSettings / from_run_config: one validated place for the federation's settings,
and the contract that pyproject.toml's defaults are the dataclasses' defaults."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import pytest

from core_training.config import ConfigError, TrainConfig
from fl_common.settings import RunSettings, from_run_config

PYPROJECT = Path(__file__).resolve().parents[2] / "pyproject.toml"

# Where the Flower app's defaults deliberately differ from the dataclass defaults
# (a federated round trains fewer local epochs than a centralized run).
INTENDED_PYPROJECT_DIFFERENCES = {"local-epochs": 2}
RECIPE_KEYS = {"optimizer": "auto", "learning-rate": 0.0, "batch-size": 0, "local-epochs": 0}


def pyproject_config() -> dict[str, Any]:
    with PYPROJECT.open("rb") as fh:
        return tomllib.load(fh)["tool"]["flwr"]["app"]["config"]


# -- splitting -------------------------------------------------------------------------


def test_from_run_config_splits_trainer_keys_from_federation_keys() -> None:
    settings, config = from_run_config(
        {"num-server-rounds": 4, "strategy": "fedmedian", "local-epochs": 3, "batch-size": 16}
    )
    assert (settings.num_server_rounds, settings.strategy) == (4, "fedmedian")
    assert (config.local_epochs, config.batch_size) == (3, 16)
    assert settings == RunSettings(num_server_rounds=4, strategy="fedmedian")
    assert config == TrainConfig(local_epochs=3, batch_size=16)


def test_empty_run_config_gives_the_defaults() -> None:
    assert from_run_config({}) == (RunSettings(), TrainConfig())


def test_run_config_values_are_coerced_to_the_field_types() -> None:
    settings, config = from_run_config(
        {"num-server-rounds": 3.0, "round-timeout": 5, "dp": "true", "amp": "false"}
    )
    assert settings.num_server_rounds == 3 and isinstance(settings.num_server_rounds, int)
    assert settings.round_timeout == 5.0 and isinstance(settings.round_timeout, float)
    assert settings.dp is True
    assert config.amp is False


def test_trainer_and_federation_keys_do_not_overlap() -> None:
    assert not set(RunSettings.keys()) & set(TrainConfig.keys())


def test_unknown_key_is_refused_by_name() -> None:
    with pytest.raises(ConfigError, match="unknown setting 'num-rounds'"):
        from_run_config({"num-rounds": 3})


def test_wrongly_typed_value_is_refused_by_name() -> None:
    with pytest.raises(ConfigError, match="'min-nodes' must be an integer"):
        from_run_config({"min-nodes": "two"})


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("num-server-rounds", 0),
        ("fraction-train", 1.5),
        ("fraction-train", 0.0),
        ("strategy", "foo"),
        ("validation", "x"),
        ("dirichlet-alpha", 0),
        ("trimmed-beta", 0.5),
        ("early-stopping-metric", "loss"),
        ("tracking", "wandb"),
        ("local-epochs", -1),
    ],
)
def test_out_of_range_value_names_its_key(key: str, value: object) -> None:
    with pytest.raises(ConfigError, match=f"setting '{key}'"):
        from_run_config({key: value})


def test_dataset_path_without_schema_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"'dataset'.*needs 'schema'"):
        from_run_config({"dataset": "data/silo.csv"})


def test_dataset_path_with_schema_is_accepted() -> None:
    settings, _ = from_run_config({"dataset": "data/silo.csv", "schema": "data/schema.toml"})
    assert not settings.builtin


def test_dp_budget_below_target_epsilon_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"'privacy-budget'.*below 'target-epsilon'"):
        from_run_config({"dp": True, "target-epsilon": 8.0, "privacy-budget": 4.0})


def test_resampling_under_dp_is_refused_before_any_round() -> None:
    with pytest.raises(ConfigError, match=r"'resampling' must be none under differential"):
        from_run_config({"dp": True, "resampling": "over"})
    assert from_run_config({"dp": False, "resampling": "over"})[1].resampling == "over"


def test_budget_below_target_epsilon_is_fine_without_dp() -> None:
    settings, _ = from_run_config({"dp": False, "target-epsilon": 8.0, "privacy-budget": 4.0})
    assert settings.privacy_budget == 4.0


def test_relative_artifacts_dir_resolves_under_fedsilo_home(isolated_home: Path) -> None:
    settings = RunSettings(artifacts_dir="runs/exp1")
    assert settings.artifacts_root() == isolated_home / "runs" / "exp1"


def test_absolute_artifacts_dir_is_honoured_exactly(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere" / "artifacts"
    assert RunSettings(artifacts_dir=str(target)).artifacts_root() == target


def test_to_dict_round_trips_through_from_run_config() -> None:
    settings = RunSettings(strategy="krum", krum_malicious=1, dp=True, run_name="r1")
    config = TrainConfig(optimizer="sgd", hidden_sizes="32")
    assert from_run_config({**settings.to_dict(), **config.to_dict()}) == (settings, config)


# -- contract with pyproject.toml --------------------------------------------------------


def test_pyproject_config_keys_are_exactly_the_settings_keys() -> None:
    keys = list(pyproject_config())
    expected = [*RunSettings.keys(), *TrainConfig.keys()]
    assert sorted(keys) == sorted(expected)
    assert len(keys) == len(expected)


def test_pyproject_config_builds_and_matches_the_dataclass_defaults() -> None:
    raw = pyproject_config()
    settings, config = from_run_config(raw)
    built = {**settings.to_dict(), **config.to_dict()}
    defaults = {**RunSettings().to_dict(), **TrainConfig().to_dict()}
    differences = {k: built[k] for k in defaults if built[k] != defaults[k]}
    assert differences == INTENDED_PYPROJECT_DIFFERENCES
    for key, value in raw.items():
        # TOML types match the fields (no 1 where 1.0 is meant, and so on)
        assert type(value) is type(defaults[key]), key
        if key in RECIPE_KEYS:  # left to the recipe: built with the plain one (dp = false)
            continue
        assert value == built[key], key


@pytest.mark.parametrize("name", ["../x", "/tmp/x", "a/b", "..", ".", "x\\y", "a b"])
def test_a_run_name_that_is_not_a_plain_name_is_refused(name: str) -> None:
    with pytest.raises(ConfigError, match="'run-name' must be a plain folder name") as caught:
        from_run_config({"run-name": name})
    assert "\n" not in str(caught.value)


def test_a_plain_run_name_stays_inside_the_artifacts_root(tmp_path) -> None:
    settings, _ = from_run_config(
        {"run-name": "hospital-study_2.v1", "artifacts-dir": str(tmp_path)}
    )
    assert (settings.artifacts_root() / settings.run_name).parent == tmp_path


def test_resume_without_a_run_name_is_refused() -> None:
    with pytest.raises(ConfigError, match="'resume' needs 'run-name'"):
        from_run_config({"resume": True})


def test_a_run_config_cannot_name_a_silo_file() -> None:
    for key in ("ledger-path", "data-path", "policy"):
        with pytest.raises(ConfigError, match=f"unknown setting '{key}'"):
            from_run_config({key: "/etc/passwd"})


# -- the recipe of the mode --------------------------------------------------------------


def test_pyproject_leaves_the_recipe_keys_to_the_mode() -> None:
    raw = pyproject_config()
    assert {k: raw[k] for k in RECIPE_KEYS} == RECIPE_KEYS


def test_a_dp_run_without_its_own_recipe_trains_with_sgd_lr_1_batch_512_3_epochs() -> None:
    _, config = from_run_config({**pyproject_config(), "dp": True})
    assert (config.optimizer, config.learning_rate, config.momentum) == ("sgd", 1.0, 0.9)
    assert (config.batch_size, config.local_epochs) == (512, 3)


def test_a_run_without_dp_keeps_the_plain_recipe() -> None:
    _, config = from_run_config(pyproject_config())
    assert (config.optimizer, config.learning_rate) == ("adam", 0.001)
    assert (config.batch_size, config.local_epochs) == (32, 2)


@pytest.mark.parametrize(
    ("key", "value", "field"),
    [
        ("optimizer", "adamw", "optimizer"),
        ("learning-rate", 0.01, "learning_rate"),
        ("batch-size", 64, "batch_size"),
        ("local-epochs", 2, "local_epochs"),
    ],
)
def test_an_explicit_setting_wins_over_the_dp_recipe(key: str, value: Any, field: str) -> None:
    _, config = from_run_config({**pyproject_config(), "dp": True, key: value})
    assert getattr(config, field) == value
    recipe = {"optimizer": "sgd", "learning_rate": 1.0, "batch_size": 512, "local_epochs": 3}
    for other, chosen in recipe.items():  # the keys left to the recipe still get it
        if other != field:
            assert getattr(config, other) == chosen


def test_the_recipe_keys_a_run_config_leaves_are_named() -> None:
    from fl_common.settings import recipe_keys

    raw = {**pyproject_config(), "batch-size": 64}
    assert recipe_keys(raw) == ("optimizer", "learning-rate", "local-epochs")
