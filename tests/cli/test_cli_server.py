"""Every ``fl-server`` command through its installed entry point, and its refusals."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import numpy as np
import pytest
from cli_helpers import FAST, Round, Workspace, assert_one_line_error, call, run_cli

from core_training.schema import Feature, Schema
from fl_common.jsonio import write_json
from privacy import store
from privacy.keys import is_encrypted_file, load_key_file


def test_keygen_makes_a_0600_key_and_refuses_to_overwrite_it(ws: Workspace) -> None:
    path = ws.root / "keys3" / "new.key"
    made = run_cli(ws, "fl-server", "keygen", "--out", path, "--json")
    assert made.code == 0, made.err
    info = json.loads(made.out)
    assert info["path"] == str(path) and len(info["key_id"]) == 16
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    before = path.read_bytes()
    again = run_cli(ws, "fl-server", "keygen", "--out", path)
    assert_one_line_error(again, "refusing to overwrite")
    assert path.read_bytes() == before


def test_init_writes_a_model_with_spec_schema_and_preprocessing(ws: Workspace) -> None:
    out = ws.path("round-0.bin")
    result = run_cli(
        ws, "fl-server", "init", "--dataset", "breast-cancer", *FAST, "--seed", "3",
        "--out", out, "--key-file", ws.key,
    )  # fmt: skip
    assert result.code == 0, result.err
    assert "fitted on breast-cancer" in result.out
    info = store.read_info(out, key=load_key_file(ws.key))
    meta = info["metadata"]
    assert info["kind"] == "model" and meta["round"] == 0
    assert meta["model_spec"]["hidden_sizes"] == [16]
    assert len(meta["schema"]["features"]) == 30
    assert len(meta["preprocessing"]["mean"]) == 30 and "class_weights" in meta["preprocessing"]
    assert meta["train_config"]["local-epochs"] == 3 and meta["train_config"]["seed"] == 3


def test_init_with_only_a_schema_refuses_and_says_how_to_get_statistics(ws: Workspace) -> None:
    out = ws.path("bare.bin")
    result = run_cli(ws, "fl-server", "init", "--schema", ws.schema, "--out", out,
                     "--key-file", ws.key)  # fmt: skip
    assert_one_line_error(result, "fl-client stats on each silo", "--stats")
    assert "--per-silo-preprocessing" in result.err
    assert not out.exists()


def test_init_leaves_preprocessing_to_the_silos_only_when_asked(ws: Workspace) -> None:
    out = ws.path("bare.bin")
    result = call(
        "fl-server", "init", "--schema", ws.schema, "--per-silo-preprocessing", "--out", out,
        "--key-file", ws.key, "--json",
    )  # fmt: skip
    assert result.code == 0, result.err
    assert json.loads(result.out)["preprocessing"].startswith("none")
    assert "preprocessing" not in store.read_info(out, key=load_key_file(ws.key))["metadata"]


def test_aggregate_through_the_console_script(first_round: Round) -> None:
    ws = first_round.ws
    out = ws.path("round-1-script.bin")
    result = run_cli(
        ws, "fl-server", "aggregate", *first_round.updates, "--base", first_round.model,
        "--out", out, "--key-file", ws.key,
    )  # fmt: skip
    assert result.code == 0, result.err
    assert "fedavg of 3 update(s)" in result.out and "0 rejected" in result.out
    assert result.err == ""  # Flower's INFO lines are silenced
    meta = store.read_info(out, key=load_key_file(ws.key))["metadata"]
    assert meta["round"] == 1 and meta["aggregation"]["num_examples"] > 0
    assert (
        meta["preprocessing"]
        == store.read_info(first_round.model, key=load_key_file(ws.key))["metadata"][
            "preprocessing"
        ]
    )


def test_evaluate_reports_metrics_and_permutation_importance(first_round: Round) -> None:
    ws = first_round.ws
    plot = ws.path("plots", "importance.png")
    result = run_cli(
        ws, "fl-server", "evaluate", first_round.model, "--data", ws.test, "--schema", ws.schema,
        "--importance", "--repeats", "2", "--plot", plot, "--key-file", ws.key, "--json",
    )  # fmt: skip
    assert result.code == 0, result.err
    report = json.loads(result.out)
    metrics = report["metrics"]
    for name in ("loss", "accuracy", "balanced_accuracy", "macro_f1"):
        assert 0 <= metrics[name] < 10
    assert len(metrics["per_class_recall"]) == 2
    assert report["preprocessing"] == "from the model file"
    features = report["importance"]["features"]
    assert len(features) == 30 and {"feature", "mean", "std"} <= set(features[0])
    assert plot.read_bytes().startswith(b"\x89PNG")


def test_evaluate_text_output_lists_per_class_recall(first_round: Round) -> None:
    ws = first_round.ws
    result = call(
        "fl-server", "evaluate", first_round.model, "--dataset", "breast-cancer",
        "--key-file", ws.key,
    )  # fmt: skip
    assert result.code == 0, result.err
    assert "balanced_accuracy" in result.out and "per-class recall" in result.out


def test_evaluate_without_preprocessing_in_the_file_fits_and_says_so(ws: Workspace) -> None:
    bare = ws.path("bare.bin")
    init = call(
        "fl-server", "init", "--schema", ws.schema, "--per-silo-preprocessing",
        "--out", bare, "--key-file", ws.key,
    )  # fmt: skip
    assert init.code == 0, init.err
    result = call(
        "fl-server", "evaluate", bare, "--data", ws.test, "--schema", ws.schema,
        "--key-file", ws.key, "--json",
    )  # fmt: skip
    assert result.code == 0, result.err
    assert "fitted on the evaluation data" in json.loads(result.out)["preprocessing"]


def test_export_prints_sizes_and_accuracies_and_writes_an_int8_export(first_round: Round) -> None:
    ws = first_round.ws
    out = ws.path("model-int8.bin")
    result = run_cli(
        ws, "fl-server", "export", first_round.updates[0], "--out", out,
        "--dataset", "breast-cancer", "--key-file", ws.key, "--json",
    )  # fmt: skip
    assert result.code == 0, result.err
    report = json.loads(result.out)
    assert report["int8_bytes"] < report["fp32_bytes"]
    assert abs(report["int8_accuracy"] - report["fp32_accuracy"]) < 0.05
    assert store.read_info(out, key=load_key_file(ws.key))["kind"] == "export"
    again = call(
        "fl-server", "evaluate", out, "--dataset", "breast-cancer", "--key-file", ws.key, "--json"
    )
    assert json.loads(again.out)["int8"] is True
    refused = call("fl-server", "export", out, "--out", ws.path("x.bin"), "--key-file", ws.key)
    assert_one_line_error(refused, "already an int8 export")


def _onnx_and_torch_outputs(onnx_file: Path, model_file: Path, ws: Workspace) -> tuple:
    """onnxruntime's and PyTorch's outputs for the model file on the cleaned test rows."""
    import onnxruntime as ort
    import torch

    from core_training.data import load_table
    from fl_common.modelfile import load_model
    from fl_server.evaluation import prepare

    key = load_key_file(ws.key)
    loaded = load_model(model_file, key=key)
    rows = prepare(loaded, model_file, load_table(ws.test, schema=ws.schema), key=key).X
    rows = rows.astype(np.float32)
    session = ort.InferenceSession(str(onnx_file), providers=["CPUExecutionProvider"])
    with torch.no_grad():
        expected = loaded.model(torch.from_numpy(rows)).numpy()
    return session.run(None, {"features": rows})[0], expected


def test_export_onnx_writes_a_plain_onnx_file_and_says_it_is_not_encrypted(
    first_round: Round,
) -> None:
    pytest.importorskip("onnxruntime")
    ws = first_round.ws
    out = ws.path("served", "model.onnx")
    result = run_cli(
        ws, "fl-server", "export", first_round.updates[0], "--format", "onnx", "--out", out,
        "--key-file", ws.key,
    )  # fmt: skip
    assert result.code == 0, result.err
    assert result.out.startswith(f"wrote {out} (ONNX, fp32, ")
    assert "NOT encrypted" in result.out
    assert not is_encrypted_file(out)
    got, expected = _onnx_and_torch_outputs(out, first_round.updates[0], ws)
    np.testing.assert_allclose(got, expected, atol=1e-4)


def test_export_onnx_int8_from_a_static_export_matches_it_on_the_test_rows(
    first_round: Round,
) -> None:
    pytest.importorskip("onnxruntime")
    ws = first_round.ws
    export = ws.path("static-int8.bin")
    made = call(
        "fl-server", "export", first_round.updates[1], "--out", export, "--data", ws.test,
        "--schema", ws.schema, "--key-file", ws.key, "--json",
    )  # fmt: skip
    assert made.code == 0, made.err
    assert json.loads(made.out)["int8_method"] == "static"
    out = ws.path("model-int8.onnx")
    result = call(
        "fl-server", "export", export, "--format", "onnx", "--int8", "--out", out,
        "--key-file", ws.key,
    )  # fmt: skip
    assert result.code == 0, result.err
    assert "(ONNX, int8, static QDQ, " in result.out
    got, expected = _onnx_and_torch_outputs(out, export, ws)
    assert (got.argmax(1) == expected.argmax(1)).mean() >= 0.98
    assert np.abs(got - expected).max() <= 0.05 * np.abs(expected).max()


def test_export_onnx_refuses_what_it_cannot_write_in_one_line_and_writes_nothing(
    first_round: Round,
) -> None:
    ws = first_round.ws
    dynamic = ws.path("dynamic-int8.bin")
    made = call("fl-server", "export", first_round.updates[2], "--out", dynamic,
                "--key-file", ws.key)  # fmt: skip
    assert made.code == 0, made.err
    assert "method    dynamic (no data given to calibrate on" in made.out
    out = ws.path("refused.onnx")
    cases = [
        ((dynamic, "--int8"), ["dynamic int8", "no data given to calibrate on", "QDQ"]),
        ((dynamic,), ["is an int8 export", "--int8"]),
        ((first_round.updates[2], "--int8"), ["needs rows to calibrate on"]),
    ]
    for extra, needles in cases:
        refused = call("fl-server", "export", *extra, "--format", "onnx", "--out", out,
                       "--key-file", ws.key)  # fmt: skip
        assert_one_line_error(refused, *needles)
    wrong_key = call("fl-server", "export", dynamic, "--format", "onnx", "--int8", "--out", out,
                     "--key-file", ws.other_key)  # fmt: skip
    assert wrong_key.code == 2 and "Traceback" not in wrong_key.err
    not_onnx = call("fl-server", "export", first_round.updates[2], "--int8", "--out", out,
                    "--key-file", ws.key)  # fmt: skip
    assert_one_line_error(not_onnx, "--int8 goes with --format onnx")
    assert not out.exists()


def test_inspect_describes_files_without_weights(first_round: Round) -> None:
    ws = first_round.ws
    result = run_cli(ws, "fl-server", "inspect", first_round.updates[0], "--key-file", ws.key)
    assert result.code == 0, result.err
    for needle in ("kind                  update", "base_digest", "num_examples", "round"):
        assert needle in result.out
    assert "net.0.weight" not in result.out and "tensor" not in result.out
    as_json = json.loads(
        call("fl-server", "inspect", first_round.model, "--key-file", ws.key, "--json").out
    )
    assert as_json["kind"] == "model" and as_json["metadata"]["round"] == 0
    assert as_json["metadata"]["preprocessing"] == {
        "columns": 30,
        "class_weights": as_json["metadata"]["preprocessing"]["class_weights"],
    }


def test_inspect_refuses_a_plain_file(ws: Workspace) -> None:
    plain = ws.path("history.json")
    plain.write_text("[]")
    assert_one_line_error(
        call("fl-server", "inspect", plain, "--key-file", ws.key), "not a fedsilo encrypted file"
    )


def test_rekey_moves_files_to_the_new_key(first_round: Round, tmp_path: Path) -> None:
    ws = first_round.ws
    copy = tmp_path / "art" / "model.bin"
    copy.parent.mkdir()
    copy.write_bytes(first_round.model.read_bytes())
    result = run_cli(
        ws, "fl-server", "rekey", copy, "--old-key-file", ws.key, "--key-file", ws.other_key
    )
    assert result.code == 0, result.err
    assert store.read_info(copy, key=load_key_file(ws.other_key))["kind"] == "model"
    assert_one_line_error(call("fl-server", "inspect", copy, "--key-file", ws.key), "cannot open")


def test_rekey_changes_nothing_when_one_file_does_not_open(ws: Workspace, tmp_path: Path) -> None:
    key = load_key_file(ws.key)
    good = store.save_json(ws.path("a.json.bin"), {"x": 1}, key=key)
    foreign = store.save_json(ws.path("b.json.bin"), {"x": 2}, key=load_key_file(ws.other_key))
    before = good.read_bytes()
    result = call(
        "fl-server", "rekey", good, foreign, "--old-key-file", ws.key, "--key-file", ws.other_key
    )
    assert_one_line_error(result, str(foreign), "No file was changed")
    assert good.read_bytes() == before


def test_report_prints_the_history_and_redraws_the_curves(ws: Workspace) -> None:
    run = ws.root / "run"
    history = [
        {"round": r, "num_clients": 2, "num_rejected": 0, "train_loss": 1 / (r + 1),
         "val_loss": 1 / (r + 1), "val_accuracy": 0.5 + r / 10, "epsilon_max": None,
         "seconds": 1.0}
        for r in range(4)
    ]  # fmt: skip
    write_json(run / "history.json", history)
    write_json(run / "summary.json", {"stop_reason": "completed", "rounds_completed": 3})
    result = run_cli(ws, "fl-server", "report", run)
    assert result.code == 0, result.err
    lines = result.out.splitlines()
    assert lines[0].split()[:3] == ["round", "clients", "rejected"]
    assert lines[4].split()[0] == "3" and "0.8000" in lines[4]
    assert "completed after 3 round(s)" in result.out
    assert (run / "curves.png").read_bytes().startswith(b"\x89PNG")


def test_report_of_several_runs_compares_them_in_one_table(ws: Workspace) -> None:
    runs = []
    for name, lr, eps in (("lr-small", 0.001, 1.5), ("lr-large", 0.01, 2.5)):
        run = ws.root / name
        history = [{"round": r, "val_loss": 1 / (r + 1), "val_accuracy": 0.5 + r / 10}
                   for r in range(3)]  # fmt: skip
        write_json(run / "history.json", history)
        settings = {"learning-rate": lr, "dataset": "wine", "run-name": name}
        write_json(
            run / "summary.json",
            {"stop_reason": "completed", "rounds_completed": 2, "best_round": 2,
             "best_metrics": {"val_loss": 0.33, "val_accuracy": 0.7}, "epsilon_max": eps,
             "settings": settings},
        )  # fmt: skip
        runs.append(run)
    result = run_cli(ws, "fl-server", "report", *runs, "--out", ws.root / "cmp.png")
    assert result.code == 0, result.err
    lines = result.out.splitlines()
    assert lines[0].split() == [
        "run", "learning-rate", "rounds", "stop", "best", "round", "best", "val_loss", "best",
        "val_accuracy", "epsilon",
    ]  # fmt: skip
    assert lines[1].split() == ["lr-small", "0.0010", "2", "completed", "2", "0.3300",
                                "0.7000", "1.5000"]  # fmt: skip
    assert lines[2].split()[:2] == ["lr-large", "0.0100"] and lines[2].split()[-1] == "2.5000"
    assert (ws.root / "cmp.png").read_bytes().startswith(b"\x89PNG")
    assert f"plot: {ws.root / 'cmp.png'}" in result.out


def test_report_flags_for_one_run_and_for_several_are_not_mixed(ws: Workspace) -> None:
    runs = [ws.root / "a", ws.root / "b"]
    for run in runs:
        write_json(run / "history.json", [{"round": 0, "val_loss": 1.0, "val_accuracy": 0.5}])
    assert_one_line_error(call("fl-server", "report", runs[0], "--out", "x.png"), "--plot")
    assert_one_line_error(call("fl-server", "report", *runs, "--plot", "x.png"), "--out FILE")


def test_report_of_a_folder_without_history_is_exit_2(ws: Workspace) -> None:
    assert_one_line_error(call("fl-server", "report", ws.root), "history.json")


def test_permutation_importance_shuffles_a_categorical_feature_as_one() -> None:
    from core_training.importance import feature_columns, permutation_importance

    schema = Schema(
        "y", (0, 1), (Feature("signal"), Feature("color", ("red", "green", "blue")), Feature("z"))
    )
    assert feature_columns(schema) == [("signal", [0]), ("color", [1, 2, 3]), ("z", [4])]
    rng = np.random.default_rng(0)
    n = 400
    color = rng.integers(0, 3, n)
    X = np.column_stack([rng.normal(size=n), np.eye(3)[color], rng.normal(size=n)])
    y = (color == 2).astype(int)  # only the colour matters

    def predict(rows: np.ndarray) -> np.ndarray:
        assert np.allclose(rows[:, 1:4].sum(1), 1.0)  # one category per row, always
        return (rows[:, 3] > 0.5).astype(int)

    baseline, found = permutation_importance(predict, X, y, schema, n_repeats=3)
    assert baseline == 1.0
    assert found[0].feature == "color" and found[0].mean > 0.3 and found[0].columns == 3
    assert {f.feature: f.mean for f in found[1:]} == {"signal": 0.0, "z": 0.0}


def test_preprocessing_in_a_model_file_round_trips_with_its_infinite_bounds(
    ws: Workspace,
) -> None:
    from core_training.preprocess import Preprocessor
    from fl_common.modelfile import preprocessing_from, preprocessing_metadata

    pre = Preprocessor(
        log_mask=np.array([True, False]),
        fill=np.array([0.5, 1.0]),
        mean=np.array([0.1, 2.0]),
        scale=np.array([1.0, 3.0]),
        clip_low=np.array([-1.0, -np.inf]),
        clip_high=np.array([1.0, np.inf]),
    )
    path = store.save_json(
        ws.path("p.bin"),
        {},
        key=load_key_file(ws.key),
        metadata={
            "preprocessing": preprocessing_metadata({**pre.to_dict(), "class_weights": [2, 1]})
        },
    )
    meta = store.read_info(path, key=load_key_file(ws.key))["metadata"]
    back, weights = preprocessing_from(meta)
    X = np.array([[3.0, -1e9], [np.nan, 7.0]])
    np.testing.assert_array_equal(back.transform(X), pre.transform(X))
    assert weights.tolist() == [2.0, 1.0]
    assert preprocessing_from({}) is None


def test_certs_subcommand_makes_a_ca_server_certificate_and_node_keys(tmp_path: Path) -> None:
    folder = tmp_path / "certs"
    done = call("fl-server", "certs", "all", "--out", folder, "--node", "silo-a")
    assert done.code == 0, done.err
    for name in ("ca.crt", "ca.key", "server.crt", "server.key", "silo-a.key", "silo-a.pub"):
        assert (folder / name).is_file(), name
    assert (folder / "ca.key").stat().st_mode & 0o077 == 0
    again = call("fl-server", "certs", "ca", "--out", folder)
    assert again.code == 2 and "refusing to overwrite" in again.err
