"""The one-machine deployment launcher's command line: its last line and its folder."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness import deploy_local
from harness.deploy_local import DeployedRun, final_result


def finished_run(tmp_path: Path, summary: dict | None) -> DeployedRun:
    run_dir = tmp_path / "artifacts" / "trial"
    run_dir.mkdir(parents=True)
    if summary is not None:
        (run_dir / "summary.json").write_text(json.dumps(summary))
    log = tmp_path / "run.log"
    log.write_text(f"INFO :      fedsilo run finished (completed); outputs in {run_dir}\n")
    return DeployedRun(proc=None, log=log, returncode=0)  # type: ignore[arg-type]


def test_final_line_names_stop_reason_and_best_accuracy(tmp_path: Path) -> None:
    summary = {
        "stop_reason": "completed",
        "best_round": 3,
        "best_metrics": {"val_accuracy": 0.91234, "val_loss": 0.3},
    }
    line = final_result(finished_run(tmp_path, summary))
    assert line == "final: completed, best round 3, val_accuracy 0.9123"


def test_final_line_without_summary_says_so(tmp_path: Path) -> None:
    assert final_result(finished_run(tmp_path, None)).startswith("no summary")


def test_temporary_folder_is_removed_and_said(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    made = tmp_path / "deploy"

    class Refused(deploy_local.LocalDeployment):
        def start(self, *, timeout: float = 120) -> None:
            (self.base / "certs").mkdir(parents=True)
            raise deploy_local.DeploymentError("no SuperLink here")

    monkeypatch.setattr(deploy_local, "LocalDeployment", Refused)
    monkeypatch.setattr(deploy_local.tempfile, "mkdtemp", lambda prefix: str(made))
    with pytest.raises(deploy_local.DeploymentError):
        deploy_local.main([])
    assert not made.exists()
    assert f"removed {made}" in capsys.readouterr().out
