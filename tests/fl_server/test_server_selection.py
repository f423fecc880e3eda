"""The model selector: the best model, its round, and when to stop, in one place."""

from __future__ import annotations

import numpy as np

from core_training.models import ModelSpec
from core_training.schema import Feature, Schema
from fl_server.early_stopping import EarlyStopping
from fl_server.selection import ModelSelector
from fl_server.state import RunState


def state(patience: int = 2, higher: bool = False) -> RunState:
    arrays = {"w": np.zeros(2, np.float32)}
    return RunState(
        spec=ModelSpec(kind="mlp", in_features=1, num_classes=2),
        schema=Schema("y", (0, 1), (Feature("a"),)),
        current=arrays,
        best={k: v.copy() for k, v in arrays.items()},
        early_stopping=EarlyStopping(patience=patience, higher_is_better=higher),
    )


def model(value: float) -> dict[str, np.ndarray]:
    return {"w": np.full(2, value, np.float32)}


def test_an_improving_model_becomes_the_best_with_its_round() -> None:
    s = state()
    selector = ModelSelector(s, "val_loss")
    assert selector.observe(1, model(1.0), {"val_loss": 0.9}).improved
    assert selector.observe(2, model(2.0), {"val_loss": 0.5}).improved
    assert selector.best_round == 2 and s.best["w"].tolist() == [2.0, 2.0]
    assert s.entry(2)["improved"] is True


def test_an_equal_value_is_not_an_improvement_and_spends_patience() -> None:
    s = state(patience=2)
    selector = ModelSelector(s, "val_loss")
    selector.observe(1, model(1.0), {"val_loss": 0.5})
    first = selector.observe(2, model(2.0), {"val_loss": 0.5})
    assert not first.improved and not first.stop
    second = selector.observe(3, model(3.0), {"val_loss": 0.5})
    assert second.stop
    assert selector.best_round == 1 and s.best["w"].tolist() == [1.0, 1.0]


def test_a_missing_metric_judges_nothing_and_spends_no_patience() -> None:
    s = state(patience=1)
    selector = ModelSelector(s, "val_accuracy")
    verdict = selector.observe(1, model(1.0), {"val_loss": 0.3})
    assert verdict == type(verdict)(improved=False, stop=False)
    assert s.early_stopping.rounds_without_improvement == 0
    assert s.best["w"].tolist() == [0.0, 0.0]


def test_an_improvement_resets_patience() -> None:
    s = state(patience=2, higher=True)
    selector = ModelSelector(s, "val_accuracy")
    selector.observe(1, model(1.0), {"val_accuracy": 0.7})
    selector.observe(2, model(2.0), {"val_accuracy": 0.6})
    assert s.early_stopping.rounds_without_improvement == 1
    assert selector.observe(3, model(3.0), {"val_accuracy": 0.8}).improved
    assert s.early_stopping.rounds_without_improvement == 0
    assert not selector.observe(4, model(4.0), {"val_accuracy": 0.79}).stop


def test_the_best_arrays_are_a_copy_not_the_live_model() -> None:
    s = state()
    live = model(1.0)
    ModelSelector(s, "val_loss").observe(1, live, {"val_loss": 0.1})
    live["w"][:] = 9.0
    assert s.best["w"].tolist() == [1.0, 1.0]
