"""Bad input is exit 2 with one clear line on stderr and no traceback; the shared
plumbing of both command lines behaves as documented."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import pytest
from cli_helpers import Round, Workspace, assert_one_line_error, call, run_cli

from core_training.schema import Feature, Schema, schema_difference
from fl_common.cli import Progress, settings_from
from fl_common.jsonio import jsonable


def flip_a_byte(path: Path, out: Path) -> Path:
    raw = bytearray(path.read_bytes())
    raw[-20] ^= 0xFF
    out.write_bytes(bytes(raw))
    return out


def test_wrong_key_is_one_line(first_round: Round) -> None:
    ws = first_round.ws
    result = run_cli(
        ws, "fl-server", "evaluate", first_round.model, "--dataset", "breast-cancer",
        "--key-file", ws.other_key,
    )  # fmt: skip
    assert_one_line_error(result, str(first_round.model), "Check that the key")


def test_tampered_file_is_one_line(first_round: Round) -> None:
    ws = first_round.ws
    bad = flip_a_byte(first_round.model, ws.path("tampered-model.bin"))
    result = run_cli(ws, "fl-server", "inspect", bad, "--key-file", ws.key)
    assert_one_line_error(result, str(bad))


def test_missing_column_is_one_line(first_round: Round) -> None:
    ws = first_round.ws
    path = ws.root / "data" / "no-label.csv"
    rows = [line.rsplit(",", 1)[0] for line in ws.silos[0].read_text().splitlines()]
    path.write_text("\n".join(rows) + "\n")
    result = run_cli(
        ws, "fl-client", "train", "--model", first_round.model, "--data", path,
        "--schema", ws.schema, "--out", ws.path("never.bin"), "--key-file", ws.key,
    )  # fmt: skip
    assert_one_line_error(result, "lacks label column 'target'")


def test_unknown_strategy_is_one_line(first_round: Round) -> None:
    ws = first_round.ws
    result = run_cli(
        ws, "fl-server", "aggregate", *first_round.updates, "--strategy", "fedbest",
        "--out", ws.path("never.bin"), "--key-file", ws.key,
    )  # fmt: skip
    assert_one_line_error(result, "invalid choice: 'fedbest'", "--help")


@pytest.mark.parametrize(
    "argv",
    [
        ["fl-server"],
        ["fl-server", "frobnicate"],
        ["fl-server", "aggregate", "--out", "x.bin"],
        ["fl-client", "train", "--model", "m.bin"],
        ["fl-client", "check-data", "--data", "x.csv"],
        ["fl-client", "check-data", "--dataset", "iris"],
        ["fl-server", "init", "--out", "m.bin", "--set", "local-epochs=0"],
        ["fl-server", "init", "--out", "m.bin", "--set", "learning_rat=0.1"],
        ["fl-server", "init", "--out", "m.bin", "--set", "oops"],
        ["fl-server", "init", "--out", "m.bin", "--dataset", "wine", "--data", "x.csv"],
        ["fl-server", "evaluate", "missing.bin", "--dataset", "wine"],
    ],
)
def test_bad_usage_is_one_line_and_exit_2(ws: Workspace, argv: list[str]) -> None:
    assert_one_line_error(call(*argv))


def test_a_missing_key_says_how_to_make_one(ws: Workspace) -> None:
    result = call("fl-server", "inspect", ws.schema)  # no --key-file, no FEDSILO_KEY
    assert_one_line_error(result)  # plain text file: refused before any key is needed
    model = ws.path("m.bin")
    made = call("fl-server", "init", "--dataset", "wine", "--out", model)
    assert_one_line_error(made, "fl-server keygen")


def test_the_environment_key_is_used_like_everywhere_else(
    ws: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FEDSILO_KEY", ws.key.read_text().strip())
    model = ws.path("env.bin")
    assert call("fl-server", "init", "--dataset", "wine", "--out", model).code == 0
    result = call("fl-server", "inspect", model, "--key-file", ws.key, "--json")
    assert result.code == 0 and json.loads(result.out)["kind"] == "model"


def test_debug_shows_the_traceback(ws: Workspace) -> None:
    result = call("fl-server", "evaluate", "missing.bin", "--dataset", "wine", "--debug")
    assert result.code == 2
    assert "Traceback" in result.err and result.err_lines[-1].startswith("error: ")


def test_a_bug_is_exit_1_and_still_one_line(ws: Workspace, monkeypatch: pytest.MonkeyPatch) -> None:
    import fl_server.cli as server_cli

    def broken(args: object) -> dict:
        raise ZeroDivisionError("boom")

    monkeypatch.setattr(server_cli.COMMANDS[0], "run", broken)
    result = call("fl-server", "keygen", "--out", ws.root / "k" / "x.key")
    assert result.code == 1 and len(result.err_lines) == 1
    assert "ZeroDivisionError: boom" in result.err and "--debug" in result.err


@pytest.mark.parametrize(
    ("tool", "command", "flag"),
    [("fl-server", "aggregate", "--strategy"), ("fl-client", "train", "--dp")],
)
def test_python_dash_m_runs_the_same_command_line(
    ws: Workspace, tool: str, command: str, flag: str
) -> None:
    module = tool.replace("-", "_") + ".cli"
    proc = subprocess.run(
        [sys.executable, "-m", module, command, "--help"],
        capture_output=True,
        text=True,
        env=ws.env(),
    )
    assert proc.returncode == 0 and flag in proc.stdout and "example:" in proc.stdout


@pytest.mark.parametrize(
    ("tool", "commands"),
    [
        ("fl-server", ("keygen", "init", "aggregate", "evaluate", "export", "inspect", "rekey",
                       "report")),
        ("fl-client", ("check-data", "stats", "train", "budget")),
    ],
)  # fmt: skip
def test_every_command_has_help_with_an_example(tool: str, commands: tuple[str, ...]) -> None:
    listed = call(tool, "--help")
    for command in commands:
        assert command in listed.out
        result = call(tool, command, "--help")
        assert result.code == 0 and f"example:\n  {tool} {command}" in result.out


def test_settings_are_typed_like_the_training_setting_they_name() -> None:
    got = settings_from(["local-epochs=2", "hidden-sizes=64", "learning-rate=1e-3", "amp=false"])
    assert got == {"local-epochs": 2, "hidden-sizes": "64", "learning-rate": 0.001, "amp": False}


def test_json_output_has_no_nan() -> None:
    text = json.dumps(jsonable({"a": float("nan"), "b": [1.0, float("inf")], "c": Path("x")}))
    assert json.loads(text) == {"a": None, "b": [1.0, None], "c": "x"}


class FakeTTY(io.StringIO):
    def __init__(self, tty: bool) -> None:
        super().__init__()
        self.tty = tty

    def isatty(self) -> bool:
        return self.tty


def test_progress_is_drawn_on_a_terminal_only() -> None:
    shown, hidden = FakeTTY(True), FakeTTY(False)
    for stream in (shown, hidden):
        with Progress(3, "training", stream=stream) as bar:
            for epoch in range(3):
                bar.advance(note=f"epoch {epoch + 1}")
    assert "training [" in shown.getvalue() and "3/3" in shown.getvalue()
    assert shown.getvalue().endswith("\n")
    assert hidden.getvalue() == ""


BASE = Schema("y", (0, 1), (Feature("a"), Feature("b", ("x", "y"))))


@pytest.mark.parametrize(
    ("other", "words"),
    [
        (BASE, ""),
        (Schema("label", (0, 1), BASE.features), "label column 'label'"),
        (Schema("y", (0, 2), BASE.features), "classes [0, 2]"),
        (Schema("y", ("0", "1"), BASE.features), "as text"),
        (Schema("y", (0, 1), (Feature("a"),)), "missing ['b']"),
        (Schema("y", (0, 1), BASE.features[::-1]), "another order"),
        (Schema("y", (0, 1), (Feature("a"), Feature("b", ("x", "z")))), "categories differ"),
    ],
)
def test_the_refusal_says_how_two_schemas_differ(other: Schema, words: str) -> None:
    diff = schema_difference(other, BASE)
    assert (words in diff) if words else diff == ""
