"""history.json / summary.json / curves.png / the text table."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from fl_common.jsonio import write_json
from fl_server.report import history_table, plot_curves

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def history(rounds: int = 4, *, epsilon: bool = False) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = [{"round": 0, "val_loss": 1.5, "val_accuracy": 0.3}]
    for r in range(1, rounds + 1):
        entry = {
            "round": r,
            "num_clients": 3,
            "num_rejected": r % 2,
            "train_loss": 1.0 / r,
            "val_loss": 1.2 / r,
            "val_accuracy": 0.5 + 0.1 * r,
            "epsilon_max": 0.8 * r if epsilon else None,
            "seconds": 0.25 * r,
        }
        out.append(entry)
    return out


def test_write_json_writes_nan_and_inf_as_null(tmp_path: Path) -> None:
    data = {
        "a": math.nan,
        "b": [1.0, math.inf, -math.inf],
        "c": {"d": np.float64("nan"), "e": 2.5},
        "t": (1, math.nan),
    }
    path = write_json(tmp_path / "h.json", data)
    text = path.read_text()
    assert "NaN" not in text and "Infinity" not in text
    assert json.loads(text) == {
        "a": None,
        "b": [1.0, None, None],
        "c": {"d": None, "e": 2.5},
        "t": [1, None],
    }


def test_write_json_leaves_no_temporary_file(tmp_path: Path) -> None:
    write_json(tmp_path / "out" / "summary.json", {"x": 1})
    write_json(tmp_path / "out" / "summary.json", {"x": 2})
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["summary.json"]
    assert json.loads((tmp_path / "out" / "summary.json").read_text()) == {"x": 2}


def test_failed_write_json_keeps_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    path = write_json(tmp_path / "summary.json", {"x": 1})
    with pytest.raises(TypeError):
        write_json(path, {"x": object()})
    assert [p.name for p in tmp_path.iterdir()] == ["summary.json"]
    assert json.loads(path.read_text()) == {"x": 1}


@pytest.mark.parametrize("epsilon", [False, True], ids=["no-dp", "dp"])
def test_plot_curves_writes_a_png(tmp_path: Path, epsilon: bool) -> None:
    path = plot_curves(history(epsilon=epsilon), tmp_path / "curves.png")
    data = path.read_bytes()
    assert data.startswith(PNG_SIGNATURE)
    assert len(data) > 1000
    assert [p.name for p in tmp_path.iterdir()] == ["curves.png"]


def test_plot_with_epsilon_is_wider_than_without(tmp_path: Path) -> None:
    def width(png: bytes) -> int:
        return int.from_bytes(png[16:20], "big")  # IHDR width

    plain = plot_curves(history(), tmp_path / "a.png").read_bytes()
    dp = plot_curves(history(epsilon=True), tmp_path / "b.png").read_bytes()
    assert width(dp) > width(plain)


def test_plot_curves_skips_rounds_without_validation(tmp_path: Path) -> None:
    rows = [*history(2), {"round": 3, "val_loss": None, "skipped": True}]
    assert plot_curves(rows, tmp_path / "c.png").read_bytes().startswith(PNG_SIGNATURE)


def test_history_table_has_a_header_and_one_line_per_entry() -> None:
    rows = history(5)
    lines = history_table(rows).splitlines()
    assert len(lines) == len(rows) + 1
    assert lines[0].split() == [
        "round",
        "clients",
        "rejected",
        "train_loss",
        "val_loss",
        "val_acc",
        "epsilon",
        "seconds",
    ]
    assert all(len(line.split()) == 8 for line in lines)


def test_history_table_formats_values_and_marks_missing_ones() -> None:
    lines = history_table(history(2)).splitlines()
    round0, round2 = lines[1].split(), lines[3].split()
    assert round0 == ["0", "-", "-", "-", "1.5000", "0.3000", "-", "-"]
    assert round2 == ["2", "3", "0", "0.5000", "0.6000", "0.7000", "-", "0.50"]


def test_history_table_of_no_rounds_is_only_the_header() -> None:
    assert len(history_table([]).splitlines()) == 1
