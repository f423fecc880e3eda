"""End to end: a federation of image silos (a folder of PNG files per class) through the
real `flwr run .`, with per-channel federated statistics and crop-flip augmentation."""

from __future__ import annotations

from pathlib import Path

import pytest

from simulations.image_files import make_digit_images

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def digit_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("images")
    make_digit_images(out)  # out/schema.toml and out/all/<digit>/<n>.png
    return out


def test_png_folder_federation_learns_and_exports(flwr, digit_folder: Path) -> None:
    run = flwr.run(
        {
            "dataset": str(digit_folder / "all"),
            "schema": str(digit_folder / "schema.toml"),
            "num-server-rounds": 2,
            "local-epochs": 2,
            "learning-rate": 0.003,
            "batch-size": 64,
            "model": "mlp",  # the CNN learns these too, at twice the time
            "augment": "crop-flip",
            "run-name": "digits-png",
        },
        timeout=300,
    )
    assert run.returncode == 0, run.output[-4000:]
    assert "Federated statistics from 2 node(s)" in run.output
    history = run.history
    assert [h["round"] for h in history] == [0, 1, 2]
    assert all(h["num_clients"] == 2 and h["num_rejected"] == 0 for h in history[1:])
    best = run.summary["best_metrics"]["val_accuracy"]
    assert best > 0.5, best  # ten classes: chance is 0.1
    export = run.summary["export"]
    assert export["int8_bytes"] < export["fp32_bytes"]
    assert (run.run_dir / "model-int8.bin").exists()
