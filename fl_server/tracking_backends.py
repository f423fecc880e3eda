"""The two trackers behind :mod:`fl_server.tracking`. Each imports its optional extra
(``fedsilo[tensorboard]``, ``fedsilo[mlflow]``) only when it is built."""

from __future__ import annotations

import os
import tempfile
import time
from logging import WARNING
from pathlib import Path
from typing import Any

from flwr.supercore import log

from .tracking import EXPERIMENT, Tracker, artifacts_of, redact, summary_values


class TensorBoardTracker(Tracker):
    """Scalars per round (step = round) in one log folder; a resumed run writes a new
    event file in the same folder and its steps go on from the checkpoint's round."""

    kind = "tensorboard"

    def __init__(self, log_dir: Path) -> None:
        super().__init__()
        from torch.utils.tensorboard import SummaryWriter

        self.log_dir = Path(log_dir)
        self.writer = SummaryWriter(log_dir=str(self.log_dir))

    def describe(self) -> dict[str, Any]:
        return {"tracker": self.kind, "log_dir": str(self.log_dir)}

    def log_params(self, params: dict[str, str], step: int) -> None:
        rows = "\n".join(f"| {k} | {v} |" for k, v in sorted(params.items()))
        self.writer.add_text("settings", "| setting | value |\n| --- | --- |\n" + rows, step)
        self.writer.flush()

    def _write_rounds(self, values: dict[int, dict[str, float]]) -> None:
        for step in sorted(values):
            for name, value in values[step].items():
                self.writer.add_scalar(name, value, step)
        self.writer.flush()

    def _write_summary(self, summary: dict[str, Any], run_dir: Path) -> None:
        step = int(summary.get("rounds_completed") or 0)
        for name, value in summary_values(summary).items():
            self.writer.add_scalar(name, value, step)
        reason = f"{summary.get('stop_reason')}: {summary.get('stop_detail') or '-'}"
        self.writer.add_text("stop_reason", reason, step)
        for name, data in artifacts_of(run_dir):
            if name.endswith(".png"):
                self._add_png(Path(name).stem, data, step)
            else:  # indented: Markdown shows it as a code block
                text = "\n".join("    " + x for x in data.decode().splitlines())
                self.writer.add_text(name, text, step)
        self.writer.close()

    def _add_png(self, tag: str, png: bytes, step: int) -> None:
        """The PNG's own bytes as an image summary (no decoding and re-encoding)."""
        from tensorboard.compat.proto.summary_pb2 import Summary

        width, height = int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")
        image = Summary.Image(height=height, width=width, colorspace=4, encoded_image_string=png)
        self.writer._get_file_writer().add_summary(
            Summary(value=[Summary.Value(tag=tag, image=image)]), step
        )


class MlflowTracker(Tracker):
    """One MLflow run in experiment ``fedsilo``; ``run_id`` reopens an earlier one."""

    kind = "mlflow"

    def __init__(
        self, uri: str, artifact_location: str | None, run_dir: Path, *, run_id: str | None
    ) -> None:
        super().__init__()
        # MLflow retries a lost server for minutes by default; a round should not wait
        # that long for an observer (an operator's own setting wins).
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "20")
        from mlflow import MlflowClient
        from mlflow.exceptions import MlflowException

        self.uri = uri
        self.client = MlflowClient(tracking_uri=uri)
        self.run_id = ""
        if run_id:
            try:
                self.client.get_run(run_id)
            except MlflowException:
                log(WARNING, "MLflow run %s is not in %s; starting a new one", run_id, redact(uri))
            else:
                self.run_id = run_id
                self.client.update_run(run_id, status="RUNNING")
        if not self.run_id:
            run = self.client.create_run(
                self._experiment(artifact_location),
                run_name=Path(run_dir).name,
                tags={"fedsilo.run_dir": str(run_dir)},
            )
            self.run_id = run.info.run_id
        self.experiment_id = self.client.get_run(self.run_id).info.experiment_id

    def _message(self, exc: Exception) -> str:
        return str(exc).replace(self.uri, redact(self.uri))

    def _experiment(self, artifact_location: str | None) -> str:
        found = self.client.get_experiment_by_name(EXPERIMENT)
        if found is not None:
            return found.experiment_id
        try:
            return self.client.create_experiment(EXPERIMENT, artifact_location=artifact_location)
        except Exception:  # made at the same moment by another run
            found = self.client.get_experiment_by_name(EXPERIMENT)
            if found is None:
                raise
            return found.experiment_id

    def describe(self) -> dict[str, Any]:
        return {
            "tracker": self.kind,
            "location": redact(self.uri),
            "experiment_id": self.experiment_id,
            "run_id": self.run_id,
        }

    def log_params(self, params: dict[str, str], step: int) -> None:
        """Parameters cannot change in MLflow: a resumed run with a changed setting
        records it as ``<key>.after-round-<step>``."""
        from mlflow.entities import Param

        existing = self.client.get_run(self.run_id).data.params
        new: dict[str, str] = {}
        for key, value in params.items():
            value = value[:6000]
            if key not in existing:
                new[key] = value
            elif existing[key] != value:
                new[f"{key}.after-round-{step}"] = value
        items = [Param(k, v) for k, v in new.items()]
        for i in range(0, len(items), 100):  # MLflow's limit per batch
            self.client.log_batch(self.run_id, params=items[i : i + 100])

    def _log_metrics(self, values: dict[int, dict[str, float]]) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [Metric(n, v, now, s) for s in sorted(values) for n, v in values[s].items()]
        for i in range(0, len(items), 1000):
            self.client.log_batch(self.run_id, metrics=items[i : i + 1000])

    def _write_rounds(self, values: dict[int, dict[str, float]]) -> None:
        self._log_metrics(values)

    def _write_summary(self, summary: dict[str, Any], run_dir: Path) -> None:
        step = int(summary.get("rounds_completed") or 0)
        self._log_metrics({step: summary_values(summary)})
        self.client.set_tag(self.run_id, "stop_reason", str(summary.get("stop_reason")))
        self.client.set_tag(self.run_id, "stop_detail", str(summary.get("stop_detail"))[:5000])
        with tempfile.TemporaryDirectory(prefix="fedsilo-tracking-") as folder:
            for name, data in artifacts_of(run_dir):
                path = Path(folder) / name
                path.write_bytes(data)
                self.client.log_artifact(self.run_id, str(path))
        self.client.set_terminated(self.run_id, "FINISHED")
