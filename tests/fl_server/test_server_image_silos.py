"""The ServerApp over the fake Grid with real ClientApp handlers and silos holding
partitions of an NPZ of images (the digits, as uint8 pixels): the preprocessing every
silo receives is per channel, fitted on the silos' merged statistics (numpy's figures
over their training images); a tabular federation that asks for augmentation stops at
set-up, before any node is asked."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sklearn.datasets import load_digits

sys.path.insert(0, str(Path(__file__).parent))
from fake_grid import FAST as FAST_RUN
from fake_grid import (
    FakeGrid,
    task_identity,  # noqa: F401 (the autouse fixture)
)

from core_training.schema import Schema
from fl_client.silo import silo_for
from fl_common import protocol as p
from fl_common.settings import from_run_config
from fl_server.app import Federation
from fl_server.loop import RunStopped
from simulations.image_files import digit_pixels


def federation(tmp_path: Path, **config: Any) -> tuple[Federation, FakeGrid]:
    run_config = {
        **FAST_RUN,
        "artifacts-dir": str(tmp_path / "artifacts"),
        "run-name": "r",
        "num-server-rounds": 1,
        **config,
    }
    grid = FakeGrid(2, run_config)
    settings, train = from_run_config(run_config)
    return Federation(grid, settings, train, run_id=1), grid  # type: ignore[arg-type]


def test_image_silos_are_standardized_with_their_merged_channel_statistics(
    tmp_path: Path,
) -> None:
    digits = load_digits()
    np.savez(tmp_path / "digits.npz", X=digit_pixels(digits.data), y=digits.target)
    Schema.image(tuple(range(10)), 1, 8, 8).save(tmp_path / "schema.toml")
    fed, grid = federation(
        tmp_path,
        dataset=str(tmp_path / "digits.npz"),
        schema=str(tmp_path / "schema.toml"),
        augment="crop-flip",
    )
    assert fed.run()["stop_reason"] == "completed"
    settings, train = from_run_config(grid.run_config)
    silos = [silo_for(dict(c.node_config), settings, train) for c in grid.contexts.values()]
    union = np.concatenate([s.train.X for s in silos]).astype(np.float64)
    sent = next(m for batch in grid.pushed for m in batch if p.PREP in m.content.array_records)
    pre, _ = p.record_to_prep(sent.content[p.PREP])
    # one channel: one mean and one scale, repeated over the 64 pixel columns
    assert pre.mean.shape == (64,) and np.ptp(pre.mean) == 0 and np.ptp(pre.scale) == 0
    assert pre.mean[0] == pytest.approx(union.mean(), rel=1e-9)
    assert pre.scale[0] == pytest.approx(union.std(), rel=1e-9)
    assert not pre.log_mask.any() and np.isinf(pre.clip_high).all()


def test_a_tabular_federation_with_augmentation_stops_before_any_node_is_asked(
    tmp_path: Path,
) -> None:
    fed, grid = federation(tmp_path, augment="crop-flip")
    with pytest.raises(RunStopped, match="needs image data") as caught:
        fed.run()
    assert caught.value.reason == "bad-augment"
    assert grid.pushed == []
