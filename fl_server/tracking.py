"""Experiment tracking: a run's history and summary, mirrored to TensorBoard or MLflow.

The tracker sees only what the server already recorded and checked: every numeric value
of each history entry (step = round), the settings, the summary's numbers, the stop
reason, and ``curves.png`` / ``summary.json``. Never a model file, a key or a row of data.

A tracker is an observer: when it cannot write (an MLflow server that went away), the
run goes on, the values stay pending and are sent with the next round. Only a missing
extra or a store that cannot be opened stops a run, and that happens before any round.

``resume=true`` continues the same tracked run: ``tracking.json`` in the run folder
names it (TensorBoard: the same log folder, MLflow: the run id), and the values the
first part of the run already sent are not sent again.
"""

from __future__ import annotations

import json
import math
from logging import INFO, WARNING
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from flwr.supercore import log

from fl_common.jsonio import write_json
from fl_common.settings import RunSettings, fedsilo_home

from .loop import RunStopped
from .report import CURVES_FILE, HISTORY_FILE, SUMMARY_FILE

TRACKING_FILE = "tracking.json"
TENSORBOARD_DIR = "tensorboard"
MLFLOW_DIR = "mlflow"
EXPERIMENT = "fedsilo"
# tracker -> (module that must import, name in messages)
EXTRAS = {
    "tensorboard": ("torch.utils.tensorboard", "TensorBoard"),
    "mlflow": ("mlflow", "MLflow"),
}


def install_hint(tracking: str) -> str:
    return f"pip install 'fedsilo[{tracking}]'"


def require(tracking: str) -> None:
    """Stop the run now, in one line naming the install command, when the extra of
    ``tracking`` is not installed."""
    if tracking not in EXTRAS:
        return
    module, name = EXTRAS[tracking]
    try:
        __import__(module)
    except ImportError as exc:
        raise RunStopped(
            "tracking-unavailable",
            f'tracking="{tracking}" needs {name}, which cannot be imported here ({exc}); '
            f"install it with: {install_hint(tracking)}",
        ) from None


# -- what is tracked -------------------------------------------------------------------


def numeric_values(data: dict[str, Any], prefix: str = "") -> dict[str, float]:
    """Every finite number in ``data`` (booleans as 0/1), nested dicts flattened to
    ``outer/inner`` (epsilon by silo id); strings, lists and nulls are left out."""
    out: dict[str, float] = {}
    for key, value in data.items():
        name = prefix + clean_name(str(key))
        if isinstance(value, dict):
            out.update(numeric_values(value, f"{name}/"))
        elif isinstance(value, (bool, int, float)) and math.isfinite(value):
            out[name] = float(value)
    return out


def round_values(entry: dict[str, Any]) -> dict[str, float]:
    """The tracked values of one history entry (its round is the step, not a value)."""
    return {k: v for k, v in numeric_values(entry).items() if k != "round"}


def summary_values(summary: dict[str, Any]) -> dict[str, float]:
    """The summary's numbers (best round and metrics, epsilon, export sizes and
    accuracies, timing) under ``summary/``; the settings are parameters instead."""
    return numeric_values({k: v for k, v in summary.items() if k != "settings"}, "summary/")


def clean_name(name: str) -> str:
    """A metric name both trackers accept (MLflow allows letters, digits, ``_-. /:``)."""
    return "".join(c if c.isalnum() or c in "_-. /:" else "_" for c in name)


def public_params(params: dict[str, Any]) -> dict[str, str]:
    """Settings as strings, with any credentials in a URI removed."""
    out = {str(k): str(v) for k, v in params.items()}
    if out.get("tracking-uri"):
        out["tracking-uri"] = redact(out["tracking-uri"])
    return out


def redact(uri: str) -> str:
    """``uri`` without a user name or password (``https://***@host/...``)."""
    parts = urlsplit(uri)
    if "@" not in parts.netloc:
        return uri
    return urlunsplit(parts._replace(netloc="***@" + parts.netloc.rsplit("@", 1)[1]))


# -- trackers --------------------------------------------------------------------------


class Tracker:
    """No tracking; the base of the real trackers. Remembers which (round, name) it
    sent so a value is sent once, whenever its round's entry gets it."""

    kind = "none"

    def __init__(self) -> None:
        self.sent: set[tuple[int, str]] = set()
        self._warned = False

    def describe(self) -> dict[str, Any] | None:
        return None

    def pending(self, history: list[dict[str, Any]]) -> dict[int, dict[str, float]]:
        """The values of ``history`` not sent yet, by round."""
        out: dict[int, dict[str, float]] = {}
        for entry in history:
            step = int(entry["round"])
            for name, value in round_values(entry).items():
                if (step, name) not in self.sent:
                    out.setdefault(step, {})[name] = value
        return out

    def log_history(self, history: list[dict[str, Any]]) -> None:
        """Send every value of ``history`` not sent yet."""
        pending = self.pending(history)
        if not pending:
            return
        try:
            self._write_rounds(pending)
        except Exception as exc:  # an observer must not end the training
            self._warn(exc)
            return
        self.sent.update((s, n) for s, values in pending.items() for n in values)
        if self._warned:
            log(INFO, "Tracking (%s) works again; the values held back are sent", self.kind)
            self._warned = False

    def finish(self, history: list[dict[str, Any]], summary: dict[str, Any], run_dir: Path) -> None:
        self.log_history(history)
        try:
            self._write_summary(summary, Path(run_dir))
        except Exception as exc:
            self._warn(exc)
        left = sum(len(v) for v in self.pending(history).values())
        if left:
            log(WARNING, "Tracking (%s): %d value(s) of history.json not sent", self.kind, left)
        self._announce("tracked")

    def _announce(self, verb: str) -> None:
        info = self.describe()
        if info:
            log(INFO, "fedsilo run: %s with %s in %s (open: %s)", verb, *_where(info))

    def _warn(self, exc: Exception) -> None:
        if not self._warned:
            log(WARNING, "Tracking (%s) failed, the run goes on: %s", self.kind, self._message(exc))
            self._warned = True

    def _message(self, exc: Exception) -> str:
        return str(exc)

    def log_params(self, params: dict[str, str], step: int) -> None:
        """Record the settings (``step``: the round the run (re)starts after)."""

    def _write_rounds(self, values: dict[int, dict[str, float]]) -> None:
        pass

    def _write_summary(self, summary: dict[str, Any], run_dir: Path) -> None:
        pass


def _where(info: dict[str, Any]) -> tuple[str, str, str]:
    if info["tracker"] == "tensorboard":
        return "TensorBoard", info["log_dir"], f"tensorboard --logdir {info['log_dir']}"
    where = f"{info['location']} (experiment {EXPERIMENT}, run {info['run_id']})"
    if info["location"].startswith(("http://", "https://")):
        return "MLflow", where, info["location"]
    return "MLflow", where, f"mlflow ui --backend-store-uri {info['location']}"


def open_tracker(
    settings: RunSettings, run_dir: Path, params: dict[str, Any], *, start_round: int = 0
) -> Tracker:
    """The run's tracker, new or (``resume=true``) the one its first part used."""
    if settings.tracking == "none":
        return Tracker()
    require(settings.tracking)
    run_dir = Path(run_dir)
    record_path = run_dir / TRACKING_FILE
    before: dict[str, Any] = {}
    if settings.resume and record_path.is_file():
        before = json.loads(record_path.read_text(encoding="utf-8"))
        if before.get("tracker") != settings.tracking:
            before = {}
    tracker: Tracker
    if settings.tracking == "tensorboard":
        from .tracking_backends import TensorBoardTracker

        tracker = TensorBoardTracker(run_dir / TENSORBOARD_DIR)
    else:
        from .tracking_backends import MlflowTracker

        uri, artifacts = mlflow_store(settings.tracking_uri, run_dir)
        try:
            tracker = MlflowTracker(uri, artifacts, run_dir, run_id=before.get("run_id"))
        except Exception as exc:
            raise RunStopped(
                "tracking-unavailable",
                f"the MLflow store {redact(uri)} cannot be used: "
                f"{str(exc).replace(uri, redact(uri)).splitlines()[0]}",
            ) from None
    continued = bool(before) and before.get("run_id") == (tracker.describe() or {}).get("run_id")
    if continued and (run_dir / HISTORY_FILE).is_file():
        # the first part of the run sent these already
        done = json.loads((run_dir / HISTORY_FILE).read_text(encoding="utf-8"))
        tracker.sent = {(int(e["round"]), n) for e in done for n in round_values(e)}
    try:
        tracker.log_params(public_params(params), start_round)
    except Exception as exc:
        tracker._warn(exc)
    write_json(record_path, tracker.describe())
    tracker._announce("continuing tracking" if continued else "tracking")
    return tracker


def mlflow_store(tracking_uri: str, run_dir: Path) -> tuple[str, str | None]:
    """(tracking URI, artifact location). Empty: a local store in the run folder; a
    plain path: a local store in that folder (relative ones under ``$FEDSILO_HOME``);
    a URI (``http://host:5000``, ``sqlite:///...``) is used as it is."""
    if tracking_uri and ":" in tracking_uri.split("/", 1)[0]:
        return tracking_uri, None
    folder = Path(tracking_uri).expanduser() if tracking_uri else Path(run_dir) / MLFLOW_DIR
    if not folder.is_absolute():
        folder = fedsilo_home() / folder
    folder.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{folder.resolve() / 'mlflow.db'}", (folder.resolve() / "artifacts").as_uri()


def artifacts_of(run_dir: Path) -> list[tuple[str, bytes]]:
    """The files a tracker keeps with the run, as (name, bytes): the curves, and the
    summary (metrics and settings only) with any credentials in a URI removed."""
    out = []
    curves, summary = Path(run_dir) / CURVES_FILE, Path(run_dir) / SUMMARY_FILE
    if curves.is_file():
        out.append((CURVES_FILE, curves.read_bytes()))
    if summary.is_file():
        data = json.loads(summary.read_text(encoding="utf-8"))
        if isinstance(data.get("settings"), dict) and data["settings"].get("tracking-uri"):
            data["settings"]["tracking-uri"] = redact(str(data["settings"]["tracking-uri"]))
        out.append((SUMMARY_FILE, (json.dumps(data, indent=2) + "\n").encode()))
    return out
