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


def _federation_result(central_accuracy: float, arms: dict[str, float], when: str) -> dict:
    setup = {"quick": False, "clients": 10, "dataset": "digits", "test_fraction": 0.25}
    setup |= {"test_seed": 1, "server_val_fraction": 0.2}
    scores = {"val_accuracy": 0.9, "balanced_accuracy": 0.9, "macro_f1": 0.9}
    central = {"accuracy": central_accuracy, "val_loss": 0.05, "best_epoch": 30, **scores}
    central |= {"model": "cnn", "epochs": 30, "train_rows": 1078, "val_rows": 270}
    central |= {"test_rows": 449}
    arm = {**scores, "best_round": 3, "rounds_completed": 5, "points_below_centralized": 0.1}
    return {
        **setup,
        "when": when,
        "centralized": central,
        "arms_planned": list(arms),
        "arms_done": list(arms),
        **{a: {**arm, "accuracy": acc, "measured": when} for a, acc in arms.items()},
    }


def test_a_partial_federation_run_keeps_arms_an_identical_earlier_run_measured() -> None:
    earlier = _federation_result(0.977, {"iid_fedavg": 0.98, "iid_fedprox": 0.5}, "t1")
    new = _federation_result(0.977, {"iid_fedprox": 0.97, "dirichlet0.1_fedavg": 0.9}, "t2")

    merged = bench_federation.carry_arms(new, earlier)

    assert merged["arms_done"] == ["iid_fedavg", "dirichlet0.1_fedavg", "iid_fedprox"]
    assert merged["arms_carried"] == ["iid_fedavg"]
    assert merged["iid_fedavg"] == earlier["iid_fedavg"]
    assert merged["iid_fedprox"]["accuracy"] == 0.97  # this run's figure, not the earlier one
    md = render_markdown({"federation": merged})
    assert "`iid_fedavg` (t1)" in md


def test_earlier_arms_are_dropped_when_the_baseline_or_the_split_changed() -> None:
    earlier = _federation_result(0.977, {"iid_fedavg": 0.98}, "t1")
    other_baseline = _federation_result(0.975, {"iid_fedprox": 0.97}, "t2")
    other_split = {**_federation_result(0.977, {"iid_fedprox": 0.97}, "t2"), "test_seed": 2}

    for new in (other_baseline, other_split):
        merged = bench_federation.carry_arms(new, earlier)
        assert merged["arms_done"] == ["iid_fedprox"] and "iid_fedavg" not in merged
