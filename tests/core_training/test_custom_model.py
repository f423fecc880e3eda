"""Your own model: run-config references, what the factory receives, the model spec that
rebuilds it, refusals of one line, and the two worked examples through the trainer."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from core_training.config import ConfigError, TrainConfig
from core_training.custom_model import ModelFactoryError, ModelInputs
from core_training.data import Table, load_builtin
from core_training.models import ModelSpec, build_model
from core_training.pipeline import model_spec_for, prepare_local, split
from core_training.schema import Schema
from core_training.trainer import evaluate, fit

RESNET = "examples.resnet_small:build"
EMBED = "examples.tabular_embed:build"


def write_app(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text), encoding="utf-8")
    return root


def custom(reference: str, **kw: object) -> ModelSpec:
    return ModelSpec(kind="custom", in_features=6, num_classes=3, factory=reference, **kw)


# -- the run config -----------------------------------------------------------------------


def test_a_plain_reference_and_json_arguments_are_accepted() -> None:
    config = TrainConfig.from_dict({"model": RESNET, "model-args": '{"width": 16}'})
    assert config.model == RESNET and json.loads(config.model_args) == {"width": 16}


@pytest.mark.parametrize(
    "model",
    ["examples/resnet_small.py:build", "examples.resnet_small", "a.b:c.d", "a:b:c", "x y:z"],
)
def test_a_model_that_is_no_plain_reference_is_refused(model: str) -> None:
    with pytest.raises(ConfigError, match=r"'model'.*package.module:factory"):
        TrainConfig.from_dict({"model": model})


@pytest.mark.parametrize("args", ["width=16", "[1, 2]", '{"not-an-identifier": 1}'])
def test_model_args_must_be_a_json_object_of_identifiers(args: str) -> None:
    with pytest.raises(ConfigError, match="'model-args'"):
        TrainConfig.from_dict({"model": RESNET, "model-args": args})


def test_model_args_without_a_custom_model_are_refused() -> None:
    with pytest.raises(ConfigError, match="only for a custom model"):
        TrainConfig.from_dict({"model": "mlp", "model-args": '{"width": 16}'})


# -- what the factory receives, what the spec records ------------------------------------


def test_the_factory_receives_the_one_hot_blocks_of_categorical_features(
    mixed_schema: Path,
) -> None:
    # age | smoker=no smoker=yes smoker=former | income
    spec = model_spec_for(Schema.load(mixed_schema), TrainConfig(model=EMBED))
    inputs = spec.inputs()
    assert (inputs.in_features, inputs.num_classes, inputs.image_shape) == (5, 2, None)
    assert [(b.name, b.start, b.size) for b in inputs.categorical] == [("smoker", 1, 3)]
    assert inputs.numeric_columns == (0, 4)


def test_digits_give_the_factory_their_image_shape() -> None:
    spec = model_spec_for(load_builtin("digits"), TrainConfig(model=RESNET))
    assert spec.inputs().image_shape == (1, 8, 8) and spec.in_features == 64


def test_the_spec_records_reference_and_arguments_and_rebuilds_the_same_model() -> None:
    config = TrainConfig(model=RESNET, model_args='{"width": 8}')
    spec = model_spec_for(load_builtin("digits"), config)
    record = json.loads(json.dumps(spec.to_dict()))  # as a model file's metadata holds it
    assert record["factory"] == RESNET and record["factory_args"] == {"width": 8}
    torch.manual_seed(0)
    first = build_model(spec)
    again = build_model(ModelSpec.from_dict(record))
    again.load_state_dict(first.state_dict())
    x = torch.randn(4, 64)
    first.eval(), again.eval()
    assert torch.equal(first(x), again(x))


# -- refusals -----------------------------------------------------------------------------


def test_a_module_outside_the_app_folder_is_refused_without_importing_it(tmp_path: Path) -> None:
    with pytest.raises(ModelFactoryError, match="no os in the app folder"):
        build_model(custom("os:getcwd"), app_dir=tmp_path)


def test_a_module_already_imported_from_elsewhere_is_refused(tmp_path: Path) -> None:
    write_app(tmp_path, {"json/__init__.py": "def build(inputs): raise SystemExit"})
    with pytest.raises(ModelFactoryError, match="json is already imported from outside"):
        build_model(custom("json:build"), app_dir=tmp_path)


def test_a_symbolic_link_out_of_the_app_folder_is_refused(tmp_path: Path) -> None:
    outside = write_app(tmp_path / "outside", {"evil.py": "open('ran', 'w')"})
    app = tmp_path / "app"
    app.mkdir()
    (app / "linked.py").symlink_to(outside / "evil.py")
    with pytest.raises(ModelFactoryError, match="linked lies outside the app folder"):
        build_model(custom("linked:build"), app_dir=app)


def test_only_the_named_module_and_its_package_run(tmp_path: Path) -> None:
    marker = tmp_path / "sibling-ran"
    write_app(
        tmp_path,
        {
            "mymodels_only/__init__.py": "",
            "mymodels_only/good.py": """
                from torch import nn
                def build(inputs):
                    return nn.Linear(inputs.in_features, inputs.num_classes)
            """,
            "mymodels_only/sibling.py": f"open({str(marker)!r}, 'w')",
        },
    )
    model = build_model(custom("mymodels_only.good:build"), app_dir=tmp_path)
    assert model.weight.shape == (3, 6) and not marker.exists()


@pytest.mark.parametrize(
    ("source", "reference", "message"),
    [
        ("raise ImportError('no module named torchvision')", "b1:build", "importing b1 failed"),
        ("build = 3", "b2:build", "b2 has no callable 'build'"),
        ("def build(inputs):\n    raise RuntimeError('boom')", "b3:build", "factory raised"),
        ("def build(inputs):\n    return 'model'", "b4:build", "returned a str"),
        (
            "from torch import nn\ndef build(inputs):\n    return nn.Linear(inputs.in_features, 5)",
            "b5:build",
            r"output \(2, 5\) for a batch of 2, expected \(2, 3\) logits",
        ),
        (
            "from torch import nn\ndef build(inputs):\n    return nn.Linear(2, 3)",
            "b6:build",
            r"forward pass on a \(2, 6\) zero batch failed",
        ),
    ],
)
def test_a_bad_factory_is_one_line_naming_the_reference(
    tmp_path: Path, source: str, reference: str, message: str
) -> None:
    module = reference.split(":")[0]
    write_app(tmp_path, {f"{module}.py": source})
    with pytest.raises(ModelFactoryError, match=message) as caught:
        build_model(custom(reference), app_dir=tmp_path)
    assert "\n" not in str(caught.value) and module in str(caught.value)


# -- the worked examples --------------------------------------------------------------------


def test_the_residual_cnn_has_over_100k_weights_and_learns_digits() -> None:
    table = load_builtin("digits")
    config = TrainConfig(model=RESNET, local_epochs=8, learning_rate=1e-3, batch_size=32)
    train, test = split(table, test_fraction=0.25, seed=0)
    prepared = prepare_local(train, config)
    torch.manual_seed(0)
    model = build_model(model_spec_for(table, config))
    assert sum(p.numel() for p in model.parameters()) >= 100_000
    fit(model, prepared.X, prepared.y, config)
    accuracy = evaluate(model, prepared.preprocessor.transform(test.X), test.y)["accuracy"]
    assert accuracy >= 0.95  # 10 classes: chance is 0.1


def category_table(rows: int = 1200, seed: int = 0) -> Table:
    """The label is the colour's class (3 of 4 colours) with 5% flipped; two numeric
    columns are noise. Only the categorical column carries the label."""
    rng = np.random.default_rng(seed)
    colour = rng.integers(0, 4, rows)
    y = np.where(colour == 3, 0, colour % 3).astype(np.int64)
    flip = rng.random(rows) < 0.05
    y[flip] = rng.integers(0, 3, flip.sum())
    one_hot = np.eye(4)[colour]
    X = np.column_stack([rng.normal(size=rows), one_hot, rng.normal(size=rows)])
    schema = Schema.from_dict(
        {
            "label": {"column": "y", "classes": [0, 1, 2]},
            "features": {
                "a": "numeric",
                "colour": {"categories": ["red", "green", "blue", "grey"]},
                "b": "numeric",
            },
        }
    )
    return Table(X, y, schema, "colours")


def test_the_embedding_model_learns_a_label_carried_by_a_category() -> None:
    table = category_table()
    config = TrainConfig(
        model=EMBED, model_args='{"embed_dim": 3}', local_epochs=15, learning_rate=1e-2
    )
    train, test = split(table, test_fraction=0.25, seed=0)
    prepared = prepare_local(train, config)
    torch.manual_seed(0)
    model = build_model(model_spec_for(table, config))
    assert model.embeddings[0].num_embeddings == 4 and model.embeddings[0].embedding_dim == 3
    fit(model, prepared.X, prepared.y, config)
    accuracy = evaluate(model, prepared.preprocessor.transform(test.X), test.y)["accuracy"]
    # 5% of labels are flipped at random (2/3 of those to another class): ~0.967 at best
    assert accuracy >= 0.9


def test_the_inputs_a_factory_gets_are_a_frozen_record() -> None:
    inputs = ModelInputs(4, 2)
    with pytest.raises(AttributeError):
        inputs.in_features = 5  # type: ignore[misc]
