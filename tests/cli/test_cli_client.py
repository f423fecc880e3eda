"""Every ``fl-client`` command through its installed entry point, and its refusals."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cli_helpers import FAST, Result, Round, Workspace, assert_one_line_error, call, run_cli

from privacy import keys, store
from privacy.keys import load_key_file


def test_check_data_summarizes_a_usable_file(ws: Workspace) -> None:
    result = run_cli(ws, "fl-client", "check-data", "--data", ws.silos[0], "--schema", ws.schema)
    assert result.code == 0, result.err
    assert "rows        143" in result.out and "usable: yes" in result.out
    report = json.loads(
        call("fl-client", "check-data", "--data", ws.silos[0], "--schema", ws.schema, "--json").out
    )
    assert report["rows"] == 143 and sum(report["classes"].values()) == 143
    assert len(report["missing"]) == 30
    assert report["duplicates"] == 0 and all(v == 0 for v in report["missing"].values())
    assert report["usable"] is True and report["problems"] == []


def _first_silo(ws: Workspace) -> tuple[str, list[str]]:
    header, *rows = ws.silos[0].read_text().splitlines()
    return header, rows


def _write(ws: Workspace, name: str, header: str, rows: list[str]) -> Path:
    path = ws.root / "data" / name
    path.write_text("\n".join([header, *rows]) + "\n")
    return path


def _check(ws: Workspace, path: Path) -> tuple[Result, dict]:
    args = ("check-data", "--data", path, "--schema", ws.schema)
    return call("fl-client", *args), json.loads(call("fl-client", *args, "--json").out)


def test_check_data_refuses_three_rows_with_exit_2_and_says_why(ws: Workspace) -> None:
    header, rows = _first_silo(ws)
    path = _write(ws, "three.csv", header, rows[:3])
    result = run_cli(ws, "fl-client", "check-data", "--data", path, "--schema", ws.schema)
    assert result.code == 2, result
    assert "rows        3" in result.out and "usable: no" in result.out
    assert len(result.err_lines) == 1 and "Traceback" not in result.err
    assert result.err_lines[0].startswith(f"error: {path} is not usable: only 3 distinct row(s)")
    assert "at least 10" in result.err_lines[0]
    report = json.loads(call("fl-client", "check-data", "--data", path, "--schema", ws.schema,
                             "--json").out)  # fmt: skip
    assert report["usable"] is False and report["rows"] == 3
    assert report["problems"][0].startswith("only 3 distinct row(s), at least 10")


def test_check_data_counts_distinct_rows_towards_the_ten_needed(ws: Workspace) -> None:
    header, rows = _first_silo(ws)
    path = _write(ws, "copies.csv", header, rows[:4] * 3)  # 12 rows, 4 distinct
    result, report = _check(ws, path)
    assert result.code == 2 and report["rows"] == 12 and report["duplicates"] == 8
    assert any(p.startswith("only 4 distinct row(s)") for p in report["problems"])


def test_check_data_refuses_a_schema_class_without_rows(ws: Workspace) -> None:
    header, rows = _first_silo(ws)
    path = _write(ws, "one-class.csv", header, [r for r in rows if r.split(",")[-1] == "1"])
    result, report = _check(ws, path)
    assert result.code == 2
    assert report["usable"] is False and report["classes"]["0"] == 0
    assert report["problems"] == [
        "every row is of class '1', so the model learns no other",
        "class '0' of the schema has no row: add rows of it or remove it from the schema",
    ]
    assert "problem: class '0' of the schema has no row" in result.out
    assert "usable: no" in result.out
    assert result.err_lines == [f"error: {path} is not usable: " + "; ".join(report["problems"])]


def test_check_data_refuses_a_column_missing_in_every_row(ws: Workspace) -> None:
    header, rows = _first_silo(ws)
    emptied = []
    for row in rows:
        cells = row.split(",")
        cells[header.split(",").index("mean area")] = ""
        emptied.append(",".join(cells))
    path = _write(ws, "no-area.csv", header, emptied)
    result, report = _check(ws, path)
    assert result.code == 2 and report["usable"] is False
    assert report["problems"] == [
        "column 'mean area' is missing in every row: fill it in or remove it from the schema"
    ]


def test_check_data_counts_missing_values_and_duplicates(ws: Workspace) -> None:
    lines = ws.silos[0].read_text().splitlines()
    header = lines[0].split(",")
    row = lines[1].split(",")
    row[header.index("mean radius")] = ""
    edited = [lines[0], ",".join(row), ",".join(row), *lines[2:]]
    path = ws.root / "data" / "gaps.csv"
    path.write_text("\n".join(edited) + "\n")
    report = json.loads(
        call("fl-client", "check-data", "--data", path, "--schema", ws.schema, "--json").out
    )
    assert report["missing"]["mean radius"] == 2
    assert report["duplicates"] == 1
    assert any("duplicate" in note for note in report["notes"])


def test_check_data_lists_every_problem_with_its_line(ws: Workspace) -> None:
    lines = ws.silos[0].read_text().splitlines()
    for line_no, value in ((3, "abc"), (7, "n/a?"), (12, "1e999")):
        cells = lines[line_no - 1].split(",")
        cells[1] = value
        lines[line_no - 1] = ",".join(cells)
    cells = lines[20 - 1].split(",")
    cells[-1] = "7"  # a class the schema does not have
    lines[20 - 1] = ",".join(cells)
    path = ws.root / "data" / "broken.csv"
    path.write_text("\n".join(lines) + "\n")
    result = run_cli(ws, "fl-client", "check-data", "--data", path, "--schema", ws.schema)
    assert result.code == 2 and result.out == "" and "Traceback" not in result.err
    first, *problems = result.err_lines
    assert first == f"error: {path} cannot be used: 4 problem(s)"
    assert [p.split(",")[0].strip() for p in problems] == ["line 3", "line 7", "line 12", "line 20"]
    assert "label column 'target'" in problems[3]


def test_check_data_names_a_missing_column_on_one_line(ws: Workspace) -> None:
    path = ws.root / "data" / "no-radius.csv"
    rows = [line.split(",", 1)[1] for line in ws.silos[0].read_text().splitlines()]
    path.write_text("\n".join(rows) + "\n")
    result = run_cli(ws, "fl-client", "check-data", "--data", path, "--schema", ws.schema)
    assert_one_line_error(result, "lacks feature column 'mean radius'")


def test_train_writes_an_update_the_server_accepts(first_round: Round) -> None:
    ws = first_round.ws
    out = ws.path("updates", "script.bin")
    result = run_cli(
        ws, "fl-client", "train", "--model", first_round.model, "--data", ws.silos[2],
        "--schema", ws.schema, "--out", out, "--key-file", ws.key, "--set", "local-epochs=1",
    )  # fmt: skip
    assert result.code == 0, result.err
    assert "update for round 1" in result.out
    info = store.read_info(out, key=load_key_file(ws.key))
    meta = info["metadata"]
    assert info["kind"] == "update"
    assert meta["round"] == 1 and meta["num_examples"] == 114 and meta["silo"].startswith("silo-")
    assert len(meta["base_digest"]) == 32 and meta["epsilon"] is None
    assert meta["metrics"]["train_loss"] > 0 and meta["metrics"]["val_examples"] > 0
    assert meta["local_train_config"]["local-epochs"] == 1
    assert meta["train_config"]["local-epochs"] == 3  # the federation's, carried unchanged
    agg = call(
        "fl-server", "aggregate", *first_round.updates[:2], out, "--base", first_round.model,
        "--out", ws.path("with-script.bin"), "--key-file", ws.key, "--json",
    )  # fmt: skip
    assert agg.code == 0 and len(json.loads(agg.out)["used"]) == 3


def test_train_refuses_settings_the_model_file_fixes(first_round: Round) -> None:
    ws = first_round.ws
    result = call(
        "fl-client", "train", "--model", first_round.model, "--data", ws.silos[0],
        "--schema", ws.schema, "--out", ws.path("u.bin"), "--key-file", ws.key,
        "--set", "hidden-sizes=64",
    )  # fmt: skip
    assert_one_line_error(result, "hidden-sizes", "fl-server init")


def test_train_refuses_data_of_another_schema(first_round: Round) -> None:
    ws = first_round.ws
    other = ws.root / "data" / "wine.toml"
    from core_training.data import load_builtin, write_csv

    wine = load_builtin("wine")
    wine.schema.save(other)
    data = write_csv(wine, ws.root / "data" / "wine.csv")
    result = call(
        "fl-client", "train", "--model", first_round.model, "--data", data, "--schema", other,
        "--out", ws.path("u.bin"), "--key-file", ws.key,
    )  # fmt: skip
    assert_one_line_error(result, "schema differs from the model's")


def test_private_training_spends_the_ledger_and_budget_shows_it(
    first_round: Round, monkeypatch: pytest.MonkeyPatch
) -> None:
    ws = first_round.ws
    monkeypatch.setenv(keys.HOME_ENV, str(ws.home))  # the silo's home, as budget sees it
    policy = ws.root / "budget-policy.toml"
    policy.write_text("[privacy]\nbudget = 3.0\n")  # the lifetime budget is the policy's
    out = ws.path("updates", "dp.bin")
    train = call(
        "fl-client", "train", "--model", first_round.model, "--data", ws.silos[0],
        "--schema", ws.schema, "--out", out, "--key-file", ws.key, "--policy", policy,
        "--dp", "--target-epsilon", "1.0", "--budget", "5.0", "--set", "local-epochs=1",
    )  # fmt: skip
    assert train.code == 0, train.err
    assert train.err == ""  # Opacus's notes are kept out of the way
    meta = store.read_info(out, key=load_key_file(ws.key))["metadata"]
    assert 0.5 < meta["epsilon"] <= 1.0 + 1e-6
    budget = run_cli(
        ws, "fl-client", "budget", "--data", ws.silos[0], "--schema", ws.schema,
        "--key-file", ws.key, "--json",
    )  # fmt: skip
    assert budget.code == 0, budget.err
    (ledger,) = json.loads(budget.out)["ledgers"]
    assert ledger["rounds_recorded"] == 1 and ledger["budget_epsilon"] == 3.0
    assert ledger["accountant"] == "prv"  # the policy's default, said beside the epsilon
    assert abs(ledger["spent_epsilon"] - meta["epsilon"]) < 1e-9
    assert abs(ledger["remaining_epsilon"] - (3.0 - meta["epsilon"])) < 1e-9
    assert Path(ledger["path"]).parent == ws.home / "ledgers"


def test_an_exhausted_budget_refuses_training_and_writes_nothing(ws: Workspace) -> None:
    model = ws.path("m.bin")
    init = call("fl-server", "init", "--dataset", "breast-cancer", *FAST, "--out", model,
                "--key-file", ws.key)  # fmt: skip
    assert init.code == 0, init.err
    ledger = ws.root / "ledgers" / "a.ledger"
    args = [
        "train", "--model", model, "--data", ws.silos[0], "--schema", ws.schema,
        "--key-file", ws.key, "--dp", "--target-epsilon", "1.0", "--budget", "1.2",
        "--ledger", ledger, "--set", "local-epochs=1",
    ]  # fmt: skip
    first = call("fl-client", *args, "--out", ws.path("u1.bin"))
    assert first.code == 0, first.err
    before = ledger.read_bytes()
    second = call("fl-client", *args, "--out", ws.path("u2.bin"))
    assert_one_line_error(second, "privacy budget exhausted", "No update was written")
    assert not ws.path("u2.bin").exists()
    assert ledger.read_bytes() == before
    shown = json.loads(call("fl-client", "budget", "--key-file", ws.key, "--ledger", ledger,
                            "--json").out)  # fmt: skip
    assert shown["ledgers"][0]["rounds_recorded"] == 1


def test_budget_without_any_ledger_says_where_it_looked(ws: Workspace) -> None:
    result = call("fl-client", "budget", "--key-file", ws.key)
    assert_one_line_error(result, str(ws.home / "ledgers"))


def test_stats_files_give_init_the_federation_preprocessing(ws: Workspace) -> None:
    stats = []
    for i, silo in enumerate(ws.silos):
        out = ws.path("stats", f"{i}.stats")
        made = call(
            "fl-client", "stats", "--data", silo, "--schema", ws.schema, "--out", out,
            "--key-file", ws.key,
        )  # fmt: skip
        assert made.code == 0, made.err
        stats.append(out)
    script = run_cli(
        ws, "fl-client", "stats", "--data", ws.silos[0], "--schema", ws.schema,
        "--out", ws.path("stats", "script.stats"), "--key-file", ws.key,
    )  # fmt: skip
    assert script.code == 0, script.err
    model = ws.path("from-stats.bin")
    init = call(
        "fl-server", "init", "--schema", ws.schema, "--stats", *stats, "--out", model,
        "--key-file", ws.key, "--json",
    )  # fmt: skip
    assert init.code == 0, init.err
    assert json.loads(init.out)["preprocessing"].startswith("federated statistics of 3 silo(s)")
    meta = store.read_info(model, key=load_key_file(ws.key))["metadata"]
    assert len(meta["preprocessing"]["mean"]) == 30
