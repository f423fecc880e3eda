"""The federation benchmark's test rows: held out before anything runs, never seen by
a silo or by the server's validation, and the only rows its comparisons are made on."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from core_training.data import load_builtin, load_table
from fl_common.data import pooled_split
from fl_common.settings import RunSettings

BENCH = Path(__file__).resolve().parents[2] / "bench"
if str(BENCH) not in sys.path:
    sys.path.insert(0, str(BENCH))

import bench_federation  # noqa: E402
from render import NOT_MEASURED, fill, render_markdown  # noqa: E402


def _rows(X: np.ndarray) -> set[bytes]:
    return {row.tobytes() for row in np.ascontiguousarray(X, dtype=np.float64)}


def test_the_file_a_federation_runs_on_holds_no_test_row(tmp_path: Path) -> None:
    table = load_builtin("digits")
    held = bench_federation.hold_out(table, tmp_path, "digits")
    on_file = load_table(held.data_config["dataset"], held.data_config["schema"])

    assert len(on_file) + len(held.test) == len(table)
    assert len(held.test) == round(len(table) * bench_federation.TEST_FRACTION)
    np.testing.assert_array_equal(on_file.X, held.rest.X)
    np.testing.assert_array_equal(on_file.y, held.rest.y)
    # digits repeats no row, so a row in both places would be a test row that leaked
    assert not _rows(on_file.X) & _rows(held.test.X)


def test_the_servers_validation_and_the_silos_pool_come_from_the_rest_only(
    tmp_path: Path,
) -> None:
    held = bench_federation.hold_out(load_builtin("digits"), tmp_path, "digits")
    settings = RunSettings(
        dataset=held.data_config["dataset"],
        schema=held.data_config["schema"],
        server_val_fraction=held.data_config["server-val-fraction"],
    )

    pool, server_val = pooled_split(settings, 0)

    assert len(pool) + len(server_val) == len(held.rest)
    test_rows = _rows(held.test.X)
    assert not _rows(pool.X) & test_rows
    assert not _rows(server_val.X) & test_rows


def test_a_placeholder_is_filled_from_the_results_or_says_not_measured() -> None:
    results = {"a": {"b": 0.5, "c": 2.0}, "d": {"e": 0.25}}

    assert fill("{{a/b|pct}}", results) == "50.00%"
    assert fill("{{a/c over a/b|.1f}} times", results) == "4.0 times"
    assert fill("{{a/missing|.2f}}", results) == NOT_MEASURED
    assert fill("{{d/e over a/zero|.2f}}", results) == NOT_MEASURED


def test_federation_results_of_the_old_rule_are_not_rendered_or_quoted() -> None:
    old = {"centralized": {"accuracy": 0.9}, "iid_fedavg": {"accuracy": 0.8}}

    md = render_markdown({"federation": old})

    assert "Not measured under the current rule" in md
    assert "{{" not in md
    assert "80.00%" not in md and "90.00%" not in md
    assert "## GPU\n\nNot measured" in md
