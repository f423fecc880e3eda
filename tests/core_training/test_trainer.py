"""The trainer's mechanics: devices, seeding, optimizers, schedule, metrics."""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator

import numpy as np
import pytest
import torch
from torch import nn
from torch.optim.optimizer import register_optimizer_step_pre_hook

from core_training.config import TrainConfig
from core_training.data import load_builtin
from core_training.models import ModelSpec, build_model
from core_training.pipeline import prepare_local
from core_training.trainer import evaluate, fit, predict_proba, resolve_device


@pytest.fixture(scope="module")
def wine() -> tuple[np.ndarray, np.ndarray]:
    """Wine, cleaned: 178 rows, 13 features, 3 classes; easy to fit."""
    prepared = prepare_local(load_builtin("wine"), TrainConfig(class_weighting="none"))
    return prepared.X, prepared.y


def _mlp(seed: int = 0, dropout: float = 0.0, in_features: int = 13) -> nn.Module:
    torch.manual_seed(seed)
    return build_model(ModelSpec("mlp", in_features, 3, hidden_sizes=(16,), dropout=dropout))


def _state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.fixture
def recorded_lrs() -> Iterator[list[float]]:
    """Learning rate of every optimizer step taken while the test runs."""
    lrs: list[float] = []
    handle = register_optimizer_step_pre_hook(
        lambda opt, args, kwargs: lrs.append(opt.param_groups[0]["lr"])
    )
    yield lrs
    handle.remove()


# -- device ----------------------------------------------------------------------------


def test_auto_device_is_cpu_without_a_gpu() -> None:
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == expected
    assert resolve_device("cpu") == torch.device("cpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
@pytest.mark.parametrize("name", ["cuda", "cuda:0"])
def test_cuda_without_a_gpu_is_an_error(name: str) -> None:
    with pytest.raises(RuntimeError, match="no CUDA GPU"):
        resolve_device(name)


# -- fit -------------------------------------------------------------------------------


def test_fit_reports_steps_and_metrics(wine: tuple[np.ndarray, np.ndarray]) -> None:
    X, y = wine
    result = fit(_mlp(), X, y, TrainConfig(local_epochs=3, batch_size=50, device="cpu"))
    assert result.steps == 3 * math.ceil(178 / 50)
    assert result.metrics["steps"] == result.steps
    assert result.metrics["num_examples"] == 178
    assert result.metrics["epochs"] == 3
    assert result.metrics["device"] == "cpu"
    assert result.metrics["amp"] == 0  # autocast is for CUDA only
    assert 0.0 <= result.metrics["train_accuracy"] <= 1.0
    assert result.metrics["train_loss"] > 0


def test_fit_is_deterministic_for_a_seed(wine: tuple[np.ndarray, np.ndarray]) -> None:
    X, y = wine
    config = TrainConfig(local_epochs=2, batch_size=16, dropout=0.5, input_noise_std=0.3, seed=5)
    a, b = _mlp(dropout=0.5), _mlp(dropout=0.5)
    ra, rb = fit(a, X, y, config), fit(b, X, y, config)
    assert _same(_state(a), _state(b))
    assert ra.metrics["train_loss"] == rb.metrics["train_loss"]


def test_different_seeds_train_differently(wine: tuple[np.ndarray, np.ndarray]) -> None:
    X, y = wine
    a, b = _mlp(), _mlp()
    fit(a, X, y, TrainConfig(local_epochs=1, batch_size=16, seed=1))
    fit(b, X, y, TrainConfig(local_epochs=1, batch_size=16, seed=2))
    assert not _same(_state(a), _state(b))


@pytest.mark.parametrize(("optimizer", "lr"), [("sgd", 0.05), ("adam", 0.01), ("adamw", 0.01)])
def test_each_optimizer_reduces_training_loss(
    wine: tuple[np.ndarray, np.ndarray], optimizer: str, lr: float
) -> None:
    X, y = wine
    model = _mlp()
    before = evaluate(model, X, y)["loss"]
    fit(
        model,
        X,
        y,
        TrainConfig(local_epochs=15, batch_size=32, optimizer=optimizer, learning_rate=lr),
    )
    after = evaluate(model, X, y)
    assert after["loss"] < 0.3 * before
    assert after["accuracy"] >= 0.95


def test_cosine_schedule_decays_from_the_base_rate_to_near_zero(
    wine: tuple[np.ndarray, np.ndarray], recorded_lrs: list[float]
) -> None:
    X, y = wine
    config = TrainConfig(local_epochs=4, batch_size=18, learning_rate=0.1, lr_schedule="cosine")
    fit(_mlp(), X, y, config)
    total = 4 * 10
    assert len(recorded_lrs) == total
    assert recorded_lrs[0] == pytest.approx(0.1)
    assert all(a >= b for a, b in itertools.pairwise(recorded_lrs))
    # The last step runs at lr * (1 + cos(pi * (T - 1) / T)) / 2, about 0.0015 lr for T = 40.
    expected_last = 0.1 * (1 + math.cos(math.pi * (total - 1) / total)) / 2
    assert recorded_lrs[-1] == pytest.approx(expected_last)
    assert recorded_lrs[-1] < 0.002 * 0.1
    assert recorded_lrs[total // 2] == pytest.approx(0.05)


def test_no_schedule_keeps_the_learning_rate(
    wine: tuple[np.ndarray, np.ndarray], recorded_lrs: list[float]
) -> None:
    X, y = wine
    fit(_mlp(), X, y, TrainConfig(local_epochs=2, batch_size=60, learning_rate=0.03))
    assert recorded_lrs == [pytest.approx(0.03)] * 6


def test_proximal_term_keeps_weights_near_the_start(wine: tuple[np.ndarray, np.ndarray]) -> None:
    X, y = wine
    start = _state(_mlp())

    def distance_after(mu: float) -> float:
        model = _mlp()
        fit(
            model,
            X,
            y,
            TrainConfig(local_epochs=5, batch_size=32, learning_rate=0.01),
            proximal_mu=mu,
        )
        end = _state(model)
        return float(sum(((end[k] - start[k]) ** 2).sum() for k in start).sqrt())

    free, held = distance_after(0.0), distance_after(10.0)
    assert free > 0
    assert held < 0.5 * free


# -- evaluate --------------------------------------------------------------------------


def _identity_model() -> nn.Module:
    model = nn.Linear(2, 2)
    with torch.no_grad():
        model.weight.copy_(torch.eye(2))
        model.bias.zero_()
    return model


def test_evaluate_metrics_on_a_hand_checked_case() -> None:
    # Logits are the inputs. Rows predict 0, 1, 0, 1; the truth is 0, 1, 1, 1.
    X = np.array([[2, 0], [0, 2], [2, 0], [0, 2]], dtype=np.float32)
    y = np.array([0, 1, 1, 1])

    metrics = evaluate(_identity_model(), X, y)

    p = math.e**2 / (1 + math.e**2)  # probability of the larger logit
    assert metrics["loss"] == pytest.approx(-(3 * math.log(p) + math.log(1 - p)) / 4)
    assert metrics["accuracy"] == pytest.approx(3 / 4)
    assert metrics["per_class_recall"] == pytest.approx([1.0, 2 / 3])
    assert metrics["balanced_accuracy"] == pytest.approx((1 + 2 / 3) / 2)
    f1_class0 = 2 * (1 / 2 * 1) / (1 / 2 + 1)  # precision 1/2, recall 1
    f1_class1 = 2 * (1 * 2 / 3) / (1 + 2 / 3)  # precision 1, recall 2/3
    assert metrics["macro_f1"] == pytest.approx((f1_class0 + f1_class1) / 2)
    assert metrics["num_examples"] == 4


def test_evaluate_reports_zero_recall_for_an_absent_prediction_class() -> None:
    X = np.array([[2, 0], [3, 0]], dtype=np.float32)
    metrics = evaluate(_identity_model(), X, np.array([0, 1]))
    assert metrics["per_class_recall"] == [1.0, 0.0]
    assert metrics["accuracy"] == 0.5


def test_predict_proba_rows_are_probabilities(wine: tuple[np.ndarray, np.ndarray]) -> None:
    X, _ = wine
    proba = predict_proba(_mlp(), X, batch_size=50)
    assert proba.shape == (178, 3)
    assert (proba >= 0).all()
    np.testing.assert_allclose(proba.sum(1), 1.0, rtol=1e-5)
