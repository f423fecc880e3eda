"""TrainConfig: built from Flower-style kebab-case keys, validated by name."""

from __future__ import annotations

import json

import pytest

from core_training.config import ConfigError, TrainConfig


def test_from_dict_accepts_kebab_case_keys() -> None:
    config = TrainConfig.from_dict(
        {"local-epochs": 7, "batch-size": 16, "learning-rate": 0.05, "lr-schedule": "cosine"}
    )
    assert config.local_epochs == 7
    assert config.batch_size == 16
    assert config.learning_rate == 0.05
    assert config.lr_schedule == "cosine"


def test_from_dict_accepts_snake_case_keys_too() -> None:
    assert TrainConfig.from_dict({"local_epochs": 3}).local_epochs == 3


def test_unknown_key_error_names_the_key() -> None:
    with pytest.raises(ConfigError, match="'local-epoch'"):
        TrainConfig.from_dict({"local-epoch": 3})


def test_unknown_keys_are_skipped_when_asked() -> None:
    config = TrainConfig.from_dict({"num-server-rounds": 10, "seed": 4}, ignore_unknown=True)
    assert config.seed == 4


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("local-epochs", -1),
        ("batch-size", -1),
        ("learning-rate", -0.1),
        ("learning-rate", -0.1),
        ("learning-rate", float("nan")),
        ("momentum", 1.0),
        ("momentum", -0.1),
        ("weight-decay", -1e-4),
        ("dropout", 1.0),
        ("dropout", -0.1),
        ("label-smoothing", 1.0),
        ("input-noise-std", -0.5),
        ("max-grad-norm", -1.0),
        ("skew-threshold", 0.0),
        ("outlier-z", -1.0),
        ("seed", -1),
        ("optimizer", "rmsprop"),
        ("lr-schedule", "step"),
        ("class-weighting", "inverse"),
        ("model", "resnet"),
        ("imputation", "mode"),
        ("device", "tpu"),
        ("hidden-sizes", "abc"),
        ("hidden-sizes", "64,0"),
        ("hidden-sizes", ""),
    ],
)
def test_out_of_range_value_error_names_its_key(key: str, value: object) -> None:
    with pytest.raises(ConfigError, match=f"'{key}'"):
        TrainConfig.from_dict({key: value})


def test_integer_setting_accepts_an_integral_float() -> None:
    config = TrainConfig.from_dict({"local-epochs": 3.0, "batch-size": 64.0})
    assert config.local_epochs == 3
    assert isinstance(config.local_epochs, int)
    assert config.batch_size == 64


def test_float_setting_accepts_an_integer() -> None:
    config = TrainConfig.from_dict({"learning-rate": 1})
    assert config.learning_rate == 1.0
    assert isinstance(config.learning_rate, float)


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("learning-rate", "abc"),
        ("learning-rate", True),
        ("local-epochs", 2.5),
        ("local-epochs", "3"),
        ("local-epochs", False),
        ("amp", "yes"),
        ("amp", 1),
        ("optimizer", 3),
    ],
)
def test_value_of_the_wrong_type_is_refused_by_key(key: str, value: object) -> None:
    with pytest.raises(ConfigError, match=f"'{key}'"):
        TrainConfig.from_dict({key: value})


def test_boolean_setting_accepts_true_false_text() -> None:
    assert TrainConfig.from_dict({"amp": "false"}).amp is False
    assert TrainConfig.from_dict({"drop-duplicates": "True"}).drop_duplicates is True


def test_to_dict_uses_kebab_case_and_round_trips_through_json() -> None:
    config = TrainConfig(local_epochs=2, optimizer="sgd", hidden_sizes="32", amp=False, seed=9)
    data = config.to_dict()
    assert set(data) == set(TrainConfig.keys())
    assert all("_" not in key for key in data)
    assert TrainConfig.from_dict(json.loads(json.dumps(data))) == config


def test_hidden_sizes_parse_to_integers() -> None:
    assert TrainConfig(hidden_sizes="128, 64,32").hidden == (128, 64, 32)


def test_config_is_frozen() -> None:
    config = TrainConfig()
    with pytest.raises(AttributeError):
        config.seed = 3  # type: ignore[misc]


def test_zero_and_auto_leave_keys_to_the_recipe_of_the_mode() -> None:
    config = TrainConfig.from_dict(
        {"optimizer": "auto", "learning-rate": 0.0, "batch-size": 0, "local-epochs": 4}
    )
    assert config.auto_keys() == ("optimizer", "learning-rate", "batch-size")
    private = config.for_mode(dp=True)
    assert (private.optimizer, private.learning_rate, private.batch_size) == ("sgd", 1.0, 512)
    assert private.local_epochs == 4 and private.auto_keys() == ()
    plain = config.for_mode(dp=False)
    assert (plain.optimizer, plain.learning_rate, plain.batch_size) == ("adam", 0.001, 32)


def test_a_config_without_auto_keys_is_the_same_in_either_mode() -> None:
    config = TrainConfig(optimizer="adamw", learning_rate=0.02, batch_size=8, local_epochs=4)
    assert config.for_mode(dp=True) == config == config.for_mode(dp=False)
