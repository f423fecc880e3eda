"""Digits models trained briefly, with validation and test rows, for the export tests."""

from __future__ import annotations

import numpy as np
import torch


def train_digits(
    kind: str, epochs: int
) -> tuple[torch.nn.Module, np.ndarray, np.ndarray, np.ndarray]:
    """A digits model (``cnn`` or ``mlp``) trained briefly on one thread; its validation
    rows (20% of the training part) and the held-out test rows (25%), cleaned, and the
    test labels. For the int8 and ONNX export tests."""
    from core_training.config import TrainConfig
    from core_training.data import load_table
    from core_training.models import build_model
    from core_training.pipeline import model_spec_for, prepare_local, split
    from core_training.trainer import fit

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        config = TrainConfig.from_dict({"model": kind, "local-epochs": epochs})
        table = load_table("digits")
        rest, test = split(table, test_fraction=0.25, seed=0)
        train, val = split(rest, test_fraction=0.2, seed=0)
        prepared = prepare_local(train, config)
        torch.manual_seed(0)
        model = build_model(model_spec_for(table, config))
        fit(model, prepared.X, prepared.y, config, device=torch.device("cpu"))
    finally:
        torch.set_num_threads(threads)
    clean = prepared.preprocessor.transform
    X_val, X_test = clean(val.X).astype(np.float32), clean(test.X).astype(np.float32)
    return model.eval(), X_val, X_test, test.y
