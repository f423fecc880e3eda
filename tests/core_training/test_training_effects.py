"""What each training option does to a model, each compared with the same run without it."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from core_training.config import TrainConfig
from core_training.data import load_builtin
from core_training.models import ModelSpec, build_model
from core_training.pipeline import prepare_local, split
from core_training.trainer import evaluate, fit, predict_proba


def _mlp(in_features: int, num_classes: int, *, dropout: float = 0.0, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return build_model(ModelSpec("mlp", in_features, num_classes, (32,), dropout))


def _flat(model: nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().flatten().clone() for p in model.parameters()])


@pytest.fixture(scope="module")
def wine() -> tuple[np.ndarray, np.ndarray]:
    prepared = prepare_local(load_builtin("wine"), TrainConfig(class_weighting="none"))
    return prepared.X, prepared.y


def test_class_weighting_raises_minority_recall() -> None:
    table = load_builtin("synthetic", rows=2000, features=10, minority_fraction=0.05, seed=0)
    train, test = split(table, test_fraction=0.3, seed=0)
    assert np.bincount(test.y)[1] >= 30  # enough minority rows for recall to mean something

    def minority_recall(weighting: str) -> float:
        config = TrainConfig(
            local_epochs=10, batch_size=64, learning_rate=0.01, class_weighting=weighting
        )
        prepared = prepare_local(train, config)
        model = _mlp(10, 2)
        fit(model, prepared.X, prepared.y, config, class_weights=prepared.class_weights)
        metrics = evaluate(model, prepared.preprocessor.transform(test.X), test.y)
        return metrics["per_class_recall"][1]

    plain, weighted = minority_recall("none"), minority_recall("balanced")
    assert weighted >= plain + 0.1


def test_label_smoothing_lowers_confidence(wine: tuple[np.ndarray, np.ndarray]) -> None:
    X, y = wine

    def mean_max_probability(smoothing: float) -> float:
        model = _mlp(13, 3)
        config = TrainConfig(
            local_epochs=20, batch_size=32, learning_rate=0.01, label_smoothing=smoothing
        )
        fit(model, X, y, config)
        return float(predict_proba(model, X).max(1).mean())

    sharp, smooth = mean_max_probability(0.0), mean_max_probability(0.3)
    assert sharp > 0.95
    # With smoothing 0.3 over 3 classes the target's own probability is 0.8.
    assert smooth < sharp - 0.05
    assert smooth < 0.85


def test_gradient_clipping_bounds_the_update() -> None:
    rng = np.random.default_rng(0)
    X = (rng.normal(size=(64, 8)) * 1000).astype(np.float32)  # large inputs, large gradients
    y = (X[:, 0] > 0).astype(np.int64)

    def update_norm(max_grad_norm: float) -> float:
        model = _mlp(8, 2)
        start = _flat(model)
        config = TrainConfig(
            local_epochs=1,
            batch_size=64,
            optimizer="sgd",
            learning_rate=1.0,
            momentum=0.0,
            weight_decay=0.0,
            max_grad_norm=max_grad_norm,
        )
        assert fit(model, X, y, config).steps == 1
        return float((_flat(model) - start).norm())

    clipped, free = update_norm(0.01), update_norm(0.0)
    assert clipped <= 0.01 * 1.0 + 1e-6
    assert clipped == pytest.approx(0.01, rel=1e-3)  # the raw gradient was larger: clipped
    assert free > 100 * clipped


def test_prediction_is_deterministic_with_dropout() -> None:
    model = _mlp(13, 3, dropout=0.5)
    model.train()  # dropout would be live if predict_proba did not switch to eval mode
    X = np.random.default_rng(0).normal(size=(50, 13)).astype(np.float32)

    first, second = predict_proba(model, X), predict_proba(model, X)

    np.testing.assert_array_equal(first, second)
    with torch.no_grad():
        plain = torch.softmax(model.eval()(torch.as_tensor(X)), dim=1).numpy()
    np.testing.assert_allclose(first, plain, rtol=1e-6)


def test_evaluation_is_deterministic_after_training_with_dropout_and_noise(
    wine: tuple[np.ndarray, np.ndarray],
) -> None:
    X, y = wine
    model = _mlp(13, 3, dropout=0.5)
    fit(model, X, y, TrainConfig(local_epochs=2, dropout=0.5, input_noise_std=1.0))
    assert evaluate(model, X, y) == evaluate(model, X, y)


def test_input_noise_changes_training(wine: tuple[np.ndarray, np.ndarray]) -> None:
    X, y = wine
    quiet, noisy = _mlp(13, 3), _mlp(13, 3)
    fit(quiet, X, y, TrainConfig(local_epochs=2, input_noise_std=0.0))
    fit(noisy, X, y, TrainConfig(local_epochs=2, input_noise_std=1.0))
    assert not torch.equal(_flat(quiet), _flat(noisy))


def test_dropout_changes_training(wine: tuple[np.ndarray, np.ndarray]) -> None:
    X, y = wine
    plain, dropped = _mlp(13, 3, dropout=0.0), _mlp(13, 3, dropout=0.5)
    assert torch.equal(_flat(plain), _flat(dropped))  # same start
    fit(plain, X, y, TrainConfig(local_epochs=1))
    fit(dropped, X, y, TrainConfig(local_epochs=1))
    assert not torch.equal(_flat(plain), _flat(dropped))


def test_oversampling_raises_minority_recall() -> None:
    table = load_builtin("synthetic", rows=2000, features=10, minority_fraction=0.05, seed=0)
    train, test = split(table, test_fraction=0.3, seed=0)
    assert np.bincount(test.y)[1] >= 30

    def minority_recall(resampling: str) -> float:
        config = TrainConfig(
            local_epochs=10,
            batch_size=64,
            learning_rate=0.01,
            class_weighting="none",
            resampling=resampling,
        )
        prepared = prepare_local(train, config)
        model = _mlp(10, 2)
        fit(model, prepared.X, prepared.y, config)
        metrics = evaluate(model, prepared.preprocessor.transform(test.X), test.y)
        return metrics["per_class_recall"][1]

    plain, over = minority_recall("none"), minority_recall("over")
    assert over >= plain + 0.1


def test_resampling_counts_the_distinct_training_rows() -> None:
    y = np.repeat([0, 1], [90, 10])
    X = np.column_stack([y, np.arange(100)]).astype(np.float32)
    config = TrainConfig(local_epochs=1, batch_size=50, resampling="over", class_weighting="none")
    result = fit(_mlp(2, 2), X, y, config)
    assert result.metrics["num_examples"] == 100  # the aggregation weight is not inflated
    assert result.metrics["rows_trained"] == 180  # both classes brought up to 90
    assert result.steps == 4  # ceil(180 / 50)


def test_resampling_is_refused_under_dp_before_training() -> None:
    def privatize(*parts: object) -> object:
        raise AssertionError("never reached")

    config = TrainConfig(local_epochs=1, resampling="under")
    X, y = np.zeros((20, 2), dtype=np.float32), np.repeat([0, 1], 10)
    with pytest.raises(ValueError, match=r"resampling.*differential privacy"):
        fit(_mlp(2, 2), X, y, config, privatize=privatize)  # type: ignore[arg-type]
