"""Which weights a run freezes, keeps local or shares: patterns on state-dict names,
FedBN's normalization layers, and the plans that are refused before a run starts."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from core_training.config import ConfigError, TrainConfig
from core_training.layers import freeze_, normalization_names, parse_patterns, plan_layers
from core_training.models import MLP, SmallCNN
from core_training.trainer import fit


def test_patterns_are_split_on_commas_and_an_empty_one_is_refused() -> None:
    assert parse_patterns(" net.0.*,  head.* ", "freeze") == ("net.0.*", "head.*")
    assert parse_patterns("  ", "freeze") == ()
    with pytest.raises(ConfigError, match=r"'freeze'.*empty pattern"):
        parse_patterns("net.0.*,,head.*", "freeze")


def test_freeze_matches_weights_by_name_and_local_layers_exclude_frozen_ones() -> None:
    model = MLP(4, 3, (8, 5))  # net.0, net.3, net.6 are the linear layers
    plan = plan_layers(model, freeze="net.0.*", local_layers="net.[06].weight")
    assert plan.frozen == {"net.0.weight", "net.0.bias"}
    assert plan.local == {"net.6.weight"}  # net.0.weight is frozen, so not local
    shared = plan.shared(model.state_dict())
    assert sorted(shared) == ["net.3.bias", "net.3.weight", "net.6.bias"]
    assert sorted(plan.fixed(model.state_dict())) == sorted(plan.kept)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"freeze": "features.*"}, "pattern 'features.\\*' matches no parameter"),
        ({"local-layers": "net.9.*"}, "'local-layers': pattern 'net.9.\\*' matches no"),
        ({"freeze": "net.*"}, "freezes every parameter"),
        ({"freeze": "net.0.*", "local-layers": "net.3.*"}, "leave no parameter to share"),
        ({"personalization": "fedbn"}, "has none"),
    ],
)
def test_plans_that_cannot_mean_what_they_say_are_refused(
    settings: dict[str, str], message: str
) -> None:
    kwargs = {k.replace("-", "_"): v for k, v in settings.items()}
    with pytest.raises(ConfigError, match=message):
        plan_layers(MLP(4, 3, (8,)), **kwargs)


def test_fedbn_keeps_every_normalization_weight_and_statistic_local() -> None:
    model = nn.Sequential(nn.Linear(4, 6), nn.BatchNorm1d(6), nn.LayerNorm(6), nn.Linear(6, 2))
    expected = {
        "1.weight",
        "1.bias",
        "1.running_mean",
        "1.running_var",
        "1.num_batches_tracked",
        "2.weight",
        "2.bias",
    }
    assert normalization_names(model) == expected
    assert plan_layers(model, personalization="fedbn").local == expected
    cnn = SmallCNN((1, 8, 8), 10)  # the built-in CNN's GroupNorm layers
    assert normalization_names(cnn) == {
        f"features.{i}.{w}" for i in (1, 4) for w in ("weight", "bias")
    }


def test_frozen_weights_do_not_change_in_training_and_the_rest_does() -> None:
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(64, 4)).astype(np.float32), rng.integers(0, 3, 64)
    torch.manual_seed(0)
    model = MLP(4, 3, (8,))
    plan = plan_layers(model, freeze="net.0.*")
    freeze_(model, plan.frozen)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    # weight decay would move a frozen weight if the optimizer held it
    fit(
        model,
        X,
        y,
        TrainConfig(local_epochs=2, batch_size=16, learning_rate=0.05, weight_decay=0.1),
    )
    after = model.state_dict()
    for name in before:
        same = torch.equal(before[name], after[name])
        assert same == (name in plan.frozen), name
