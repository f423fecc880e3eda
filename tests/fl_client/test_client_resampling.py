"""Resampling in a silo's round touches its training rows only."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from core_training import trainer
from core_training.config import TrainConfig
from core_training.data import load_builtin
from core_training.models import ModelSpec, build_model
from core_training.pipeline import prepare_local, split
from fl_client.local_round import train_round
from fl_client.silo import Silo
from privacy.policy import SiloPolicy


@pytest.mark.parametrize("mode", ["over", "under"])
def test_a_round_resamples_the_training_rows_and_never_the_validation_rows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mode: str
) -> None:
    table = load_builtin("synthetic", rows=300, features=6, minority_fraction=0.1, seed=1)
    train, val = split(table, test_fraction=0.2, seed=0)
    silo = Silo("silo-x", train, val, 0, tmp_path / "ledger", SiloPolicy.defaults(simulated=True))
    config = TrainConfig(local_epochs=1, class_weighting="none", resampling=mode)
    pre = prepare_local(train, config).preprocessor
    seen: list[np.ndarray] = []
    original = trainer.resample_classes

    def recording(X: np.ndarray, y: np.ndarray, **kwargs: object) -> tuple:
        seen.append(np.array(X))
        return original(X, y, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(trainer, "resample_classes", recording)
    torch.manual_seed(0)
    model = build_model(ModelSpec("mlp", 6, 2, (8,), 0.0))

    result = train_round(model, silo, config, preprocessor=pre, class_weights=None, server_round=1)

    assert len(seen) == 1
    np.testing.assert_array_equal(seen[0], pre.transform(train.X))
    val_rows = {r.tobytes() for r in pre.transform(val.X)}
    assert not val_rows & {r.tobytes() for r in seen[0]}
    assert result.val["num_examples"] == len(val)  # validated once per row, no copies
    assert result.num_examples == len(train)
    counts = np.bincount(train.y)
    expected = 2 * (counts.max() if mode == "over" else counts.min())
    assert result.train["rows_trained"] == expected
