"""Models: forward shapes, Opacus compatibility, and the JSON-able ModelSpec."""

from __future__ import annotations

import json

import pytest
import torch
from opacus.validators import ModuleValidator
from torch import nn

from core_training.config import TrainConfig
from core_training.data import load_builtin
from core_training.models import MLP, ModelSpec, SmallCNN, build_model
from core_training.pipeline import model_spec_for

MLP_SPEC = ModelSpec("mlp", in_features=13, num_classes=3, hidden_sizes=(16, 8), dropout=0.2)
CNN_SPEC = ModelSpec("cnn", in_features=64, num_classes=10, image_shape=(1, 8, 8), channels=(4, 8))


@pytest.mark.parametrize(("spec", "kind"), [(MLP_SPEC, MLP), (CNN_SPEC, SmallCNN)])
def test_forward_gives_one_logit_per_class(spec: ModelSpec, kind: type) -> None:
    model = build_model(spec)
    assert isinstance(model, kind)
    out = model(torch.randn(5, spec.in_features))
    assert out.shape == (5, spec.num_classes)
    assert torch.isfinite(out).all()


def test_cnn_takes_multichannel_images_flat() -> None:
    spec = ModelSpec("cnn", in_features=3 * 6 * 5, num_classes=2, image_shape=(3, 6, 5))
    assert build_model(spec)(torch.randn(4, 90)).shape == (4, 2)


def test_mlp_has_one_linear_per_hidden_layer_plus_head() -> None:
    linears = [m for m in build_model(MLP_SPEC).modules() if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(13, 16), (16, 8), (8, 3)]


@pytest.mark.parametrize("spec", [MLP_SPEC, CNN_SPEC], ids=["mlp", "cnn"])
def test_models_pass_the_opacus_validator(spec: ModelSpec) -> None:
    model = build_model(spec)
    assert ModuleValidator.validate(model, strict=False) == []
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


@pytest.mark.parametrize("spec", [MLP_SPEC, CNN_SPEC], ids=["mlp", "cnn"])
def test_model_spec_round_trips_through_json(spec: ModelSpec) -> None:
    restored = ModelSpec.from_dict(json.loads(json.dumps(spec.to_dict())))
    assert restored == spec
    assert isinstance(restored.hidden_sizes, tuple)


def test_same_spec_and_seed_build_the_same_weights() -> None:
    torch.manual_seed(3)
    a = build_model(CNN_SPEC)
    torch.manual_seed(3)
    b = build_model(CNN_SPEC)
    for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.equal(pa, pb)


@pytest.mark.parametrize(
    ("kwargs", "says"),
    [
        ({"kind": "cnn", "in_features": 64, "num_classes": 10, "image_shape": (1, 8, 7)}, "56"),
        ({"kind": "cnn", "in_features": 64, "num_classes": 10}, "image shape"),
        ({"kind": "rnn", "in_features": 4, "num_classes": 2}, "'rnn'"),
        ({"kind": "mlp", "in_features": 4, "num_classes": 1}, "two classes"),
        ({"kind": "mlp", "in_features": 4, "num_classes": 2, "dropout": 1.0}, "dropout"),
        ({"kind": "mlp", "in_features": 4, "num_classes": 2, "hidden_sizes": (0,)}, "positive"),
    ],
)
def test_inconsistent_spec_is_refused(kwargs: dict, says: str) -> None:
    with pytest.raises(ValueError, match=says):
        ModelSpec(**kwargs)


def test_spec_with_unknown_keys_is_refused() -> None:
    data = MLP_SPEC.to_dict() | {"layers": 3}
    with pytest.raises(ValueError, match="layers"):
        ModelSpec.from_dict(data)


def test_auto_model_is_cnn_for_images_and_mlp_for_tables() -> None:
    config = TrainConfig(hidden_sizes="32", dropout=0.3)
    digits = model_spec_for(load_builtin("digits"), config)
    wine = model_spec_for(load_builtin("wine"), config)
    assert (digits.kind, digits.image_shape, digits.num_classes) == ("cnn", (1, 8, 8), 10)
    assert (wine.kind, wine.in_features, wine.hidden_sizes, wine.dropout) == ("mlp", 13, (32,), 0.3)
    assert model_spec_for(load_builtin("digits"), TrainConfig(model="mlp")).kind == "mlp"


def test_cnn_on_a_table_without_image_shape_is_refused() -> None:
    with pytest.raises(ValueError, match="image"):
        model_spec_for(load_builtin("wine"), TrainConfig(model="cnn"))
