"""fedsilo's Flower ServerApp: set up (or resume) a federation, run its rounds, and
write its outputs: checkpoint, best model, int8 export, history, summary and curves.

All paths are resolved here and printed: the ServerApp runs in a process whose working
directory is wherever the SuperLink was started, not the project folder.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from logging import ERROR, INFO, WARNING
from pathlib import Path
from typing import Any

import torch
from flwr.app import Context
from flwr.serverapp import Grid, ServerApp
from flwr.supercore import log
from torch import nn

from core_training.augment import augment_problem
from core_training.config import ConfigError, TrainConfig
from core_training.custom_model import ModelFactoryError
from core_training.data import Table, load_table
from core_training.layers import plan_layers
from core_training.models import ModelSpec, build_model
from core_training.pipeline import model_spec_for
from core_training.preprocess import Preprocessor
from core_training.schema import Schema
from fl_common.data import pooled_split
from fl_common.jsonio import write_json
from fl_common.modelfile import (
    arrays_from_state,
    load_model,
    preprocessing_metadata,
    save_model,
    serialized_size,
    state_from_arrays,
)
from fl_common.settings import STOP_METRICS, RunSettings, from_run_config, recipe_keys
from privacy.keys import KeyNotFoundError, default_key_path, generate_key_file, resolve_key

from . import tracking
from .aggregation import restore_strategy_state
from .early_stopping import EarlyStopping
from .held_out import run_test
from .loop import RoundLoop, RunStopped
from .report import CURVES_FILE, HISTORY_FILE, SUMMARY_FILE, plot_curves
from .selection import ModelSelector
from .state import (
    BEST_MODEL_FILE,
    CHECKPOINT_FILE,
    EXPORT_FILE,
    NodeBook,
    RunState,
    load_checkpoint,
    save_checkpoint,
)

app = ServerApp()

# Settings a resumed run may change: how long to wait, where outputs and keys are, and
# whether to export. Anything else would make the resumed run another run.
RESUME_MAY_CHANGE = (
    "resume",
    "round-timeout",
    "node-wait-timeout",
    "min-nodes",
    "artifacts-dir",
    "key-file",
    "export-int8",
    "device",
    "tracking",  # tracking observes the run: a resumed run may start or move it
    "tracking-uri",
)


@app.main()
def main(grid: Grid, context: Context) -> None:
    settings, config = from_run_config(dict(context.run_config))
    auto = recipe_keys(dict(context.run_config))
    if auto:  # said once, at the start: the summary's settings hold the values too
        chosen = ", ".join(f"{k} {config.to_dict()[k]}" for k in auto)
        mode = "DP-SGD" if settings.dp else "training without DP"
        log(INFO, "Local training: the recipe for %s: %s (set a key to override)", mode, chosen)
    try:
        Federation(grid, settings, config, run_id=context.run_id).run()
    except RunStopped as stop:  # before round 1: a refusal to start, not a crash
        log(ERROR, "fedsilo run stopped before round 1 (%s): %s", stop.reason, stop)


# Set-up stops that concern the run folder itself: nothing is written into it.
FOLDER_STOPS = ("run-exists", "nothing-to-resume", "resume-mismatch")


class Federation:
    """One federated training run, from set-up to export."""

    def __init__(
        self, grid: Grid, settings: RunSettings, config: TrainConfig, *, run_id: int
    ) -> None:
        self.settings, self.config = settings, config
        self.key = _server_key(settings)
        self.run_dir = self._run_dir(run_id)
        self.loop = RoundLoop(grid, settings, config)
        self.nodes = NodeBook()  # what the statistics step learns of each node
        # Where this process's time went, in seconds: set-up (statistics, initial model,
        # validation data), the rounds, and the end (final validation, export).
        self.timing: dict[str, float] = {}
        self.tracker = tracking.Tracker()  # none until set-up opens the configured one

    # -- set-up ------------------------------------------------------------------------

    def _run_dir(self, run_id: int) -> Path:
        # run-name is a plain name and resume needs one (RunSettings checks both), so
        # the folder is always inside the artifacts root.
        root = self.settings.artifacts_root()
        if self.settings.run_name:
            return root / self.settings.run_name
        stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
        return root / f"{Path(self.settings.dataset).stem}-{stamp}-{run_id}"

    def _start(self) -> RunState:
        checkpoint = self.run_dir / CHECKPOINT_FILE
        if self.settings.resume and checkpoint.exists():
            state, meta = load_checkpoint(checkpoint, key=self.key)
            self._check_resume(meta.get("config", {}))
            log(INFO, "Resuming %s after round %d", self.run_dir, state.round)
            self._layer_plan(state.spec, state.current)
            self.loop.model_spec = state.spec
            restore_strategy_state(self.loop.strategy, state.strategy_state)
            # Node ids may differ in a new run: ask again who takes part and with how
            # many rows, keeping the preprocessing the run started with.
            self.nodes = state.nodes
            self.nodes.rows.clear()
            self.loop.census(state.schema, self.nodes)
            self._load_validation(state)
            return state
        if self.settings.resume:
            raise RunStopped("nothing-to-resume", f"resume=true, but {checkpoint} does not exist")
        if checkpoint.exists():
            raise RunStopped(
                "run-exists",
                f"{self.run_dir} already holds a run; set resume=true to continue it or "
                "choose another run-name",
            )
        server_table = self._validation_table() if self.settings.validation == "server" else None
        schema = self._schema(server_table)
        problem = augment_problem(self.config.augment, schema.image_shape)
        if problem:  # a tabular federation cannot augment: stop before any node computes
            raise RunStopped("bad-augment", problem)
        # The model is built and checked first: a model that cannot train stops the run
        # before any silo computes (or, with DP statistics, spends budget on) anything.
        spec, initial = self._initial_model(schema)
        self._layer_plan(spec, initial)
        prep = self.loop.federated_statistics(schema, self.nodes, server_table)
        state = RunState(
            spec=spec,
            schema=schema,
            current=initial,
            best={k: v.copy() for k, v in initial.items()},
            early_stopping=EarlyStopping(
                patience=self.settings.early_stopping_patience,
                min_delta=self.settings.early_stopping_min_delta,
                higher_is_better=STOP_METRICS[self.settings.early_stopping_metric],
            ),
            prep=prep,
            nodes=self.nodes,
        )
        statistics_step = state.entry(0)  # the statistics step is round 0 of the history
        statistics_step["policy_declined"] = _by_name(self.nodes.policy_declined)
        statistics_step["no_statistics"] = _by_name(self.nodes.no_statistics)
        self.loop.model_spec = spec
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self._load_validation(state, server_table)
        if self.settings.validation == "server":
            self._selector(state).observe(0, state.current, self.loop.server_metrics(state.current))
        return state

    def _check_resume(self, saved: dict[str, Any]) -> None:
        """A resumed run continues the same training under the same privacy: any other
        setting that differs from the checkpoint's is refused, with every difference."""
        now = self._config_dict()
        free = set(RESUME_MAY_CHANGE)
        if not (self.settings.dp or saved.get("dp")):
            free.add("num-server-rounds")  # under DP the noise was calibrated for it
        changed = [
            f"{key}: {saved.get(key)!r} -> {now.get(key)!r}"
            for key in sorted(set(saved) | set(now))
            if key not in free and saved.get(key) != now.get(key)
        ]
        if changed:
            raise RunStopped(
                "resume-mismatch",
                f"resume would change the run's training or privacy ({'; '.join(changed)}); "
                f"resume with the run's own settings (only {', '.join(sorted(free))} may "
                "change) or start a new run-name",
            )

    def _schema(self, server_table: Table | None) -> Schema:
        """The federation's data contract is the operator's: the schema file of the run
        config, else the server's validation data, else the built-in data set's. Nodes
        never choose it: one whose schema differs is left out."""
        if self.settings.schema:
            return Schema.load(self.settings.schema)
        if server_table is not None:
            return server_table.schema
        if self.settings.builtin:
            return pooled_split(self.settings, self.config.seed)[1].schema
        raise RunStopped(
            "no-schema",
            "the federation needs the operator's schema: set schema=PATH in the run config "
            "(or give the server validation data)",
        )

    def _initial_model(self, schema: Schema) -> tuple[Any, dict[str, Any]]:
        spec = model_spec_for(schema, self.config)
        if not self.settings.initial_model:
            torch.manual_seed(self.config.seed)
            return spec, arrays_from_state(self._checked_model(spec).state_dict())
        try:
            loaded = load_model(self.settings.initial_model, key=self.key)
        except ModelFactoryError as exc:
            raise RunStopped(
                "bad-model", f"initial-model {self.settings.initial_model}: {exc}"
            ) from None
        self._checked_model(loaded.spec, loaded.model)
        if (loaded.spec.in_features, loaded.spec.num_classes) != (
            spec.in_features,
            spec.num_classes,
        ) or loaded.quantized:
            raise RunStopped(
                "bad-initial-model",
                f"initial-model {self.settings.initial_model} is a "
                f"{'quantized ' if loaded.quantized else ''}{loaded.spec.kind} for "
                f"{loaded.spec.in_features} features and {loaded.spec.num_classes} classes; "
                f"this federation needs an fp32 model for {spec.in_features} and "
                f"{spec.num_classes}",
            )
        log(INFO, "Starting from %s", self.settings.initial_model)
        return loaded.spec, arrays_from_state(loaded.model.state_dict())

    def _checked_model(self, spec: ModelSpec, model: nn.Module | None = None) -> nn.Module:
        """The model ``spec`` builds (a custom factory imported, called and its output
        checked), and under DP one Opacus can train: otherwise the run stops here, before
        any node is asked for anything."""
        try:
            model = model if model is not None else build_model(spec)
        except ModelFactoryError as exc:
            raise RunStopped("bad-model", str(exc)) from None
        if self.settings.dp:
            from privacy.dp import IncompatibleModelError, require_compatible

            what = f"model {spec.factory!r}" if spec.kind == "custom" else f"the {spec.kind}"
            try:
                require_compatible(model, what=what)
            except IncompatibleModelError as exc:
                raise RunStopped("model-not-private", str(exc)) from None
        return model

    def _layer_plan(self, spec: ModelSpec, arrays: dict[str, Any]) -> None:
        """Which weights the run keeps on the silos (freeze, local-layers, fedbn): a
        pattern that matches nothing, or a plan that trains or shares nothing, stops
        the run here, before any node is asked anything."""
        model = self._checked_model(spec)
        try:
            plan = plan_layers(
                model,
                freeze=self.settings.freeze,
                local_layers=self.settings.local_layers,
                personalization=self.settings.personalization,
            )
        except ConfigError as exc:
            raise RunStopped("bad-layers", str(exc)) from None
        self.loop.plan = plan
        self.loop.kept_arrays = plan.fixed(arrays)
        if plan.kept:
            total = sum(p.numel() for p in model.parameters())
            shared = sum(p.numel() for n, p in model.named_parameters() if n not in plan.kept)
            log(
                INFO,
                "Weights: %d frozen and %d local tensor(s) stay on the silos; %d of %d "
                "parameters travel",
                len(plan.frozen),
                len(plan.local),
                shared,
                total,
            )

    def _selector(self, state: RunState) -> ModelSelector:
        return ModelSelector(state, self.settings.early_stopping_metric)

    def _validation_table(self) -> Table:
        if self.settings.validation_data:  # the operator's own file: every row of it
            return load_table(self.settings.validation_data, self.settings.schema or None)
        if not (self.settings.builtin or Path(self.settings.dataset).exists()):
            raise RunStopped(
                "no-validation-data",
                f"validation=server needs data on the server, but {self.settings.dataset} "
                "is not readable here; give the server a file with validation-data=PATH "
                "(and schema=PATH) or use validation=federated",
            )
        return pooled_split(self.settings, self.config.seed)[1]

    def _load_validation(self, state: RunState, table: Table | None = None) -> None:
        if self.settings.validation != "server":
            return
        table = table or self._validation_table()
        pre = Preprocessor.from_dict({k: v for k, v in state.prep.items() if k != "class_weights"})
        self.loop.validation = (pre.transform(table.X), table.y)

    # -- the run -----------------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        started = time.perf_counter()
        log(INFO, "fedsilo run: outputs in %s", self.run_dir)
        state: RunState | None = None
        stop_reason, detail = "completed", ""
        try:
            tracking.require(self.settings.tracking)  # a missing extra stops us before set-up
            state = self._start()
            self.tracker = tracking.open_tracker(
                self.settings, self.run_dir, self._config_dict(), start_round=state.round
            )
            rounds_started = time.perf_counter()
            self.timing["setup_seconds"] = round(rounds_started - started, 3)
            elapsed0 = state.elapsed
            selector = self._selector(state)
            last = self.settings.num_server_rounds
            if state.stop_reason == "early-stopping":  # a finished run stays finished
                stop_reason, detail, last = state.stop_reason, state.stop_detail, state.round
                log(INFO, "The run stopped early after round %d; nothing to resume", last)
            for server_round in range(state.round + 1, last + 1):
                entry, verdict = self.loop.train_round(state, server_round, selector)
                state.round = server_round
                state.elapsed = elapsed0 + time.perf_counter() - started
                # The checkpoint first: after a crash between the two writes, the best
                # model on disk is never one the checkpoint does not know.
                self._checkpoint(state)
                if verdict.improved:
                    self._save_best(state)
                _log_round(entry, self.settings.num_server_rounds, state)
                self.tracker.log_history(state.history)
                if verdict.stop:
                    stop_reason = "early-stopping"
                    detail = (
                        f"{self.settings.early_stopping_metric} did not improve by more than "
                        f"{self.settings.early_stopping_min_delta:g} for "
                        f"{self.settings.early_stopping_patience} round(s)"
                    )
                    break
        except RunStopped as stop:
            stop_reason, detail = stop.reason, str(stop)
            log(WARNING, "Run stopped: %s", detail)
            if state is None:
                self._setup_stopped(stop)
                raise
            self._checkpoint(state)
        else:
            self.timing["rounds_seconds"] = round(time.perf_counter() - rounds_started, 3)
        if state.round > 0 and state.model_round == 0 and stop_reason == "completed":
            stop_reason = "no-round-trained"
            detail = "no round aggregated an update: every round was skipped"
        summary = self._finish(state, stop_reason, detail)
        log(INFO, "fedsilo run finished (%s); outputs in %s", stop_reason, self.run_dir)
        return summary

    def _setup_stopped(self, stop: RunStopped) -> None:
        """A run that stopped before its first round still says why, and which nodes
        declined (unless the stop is about the run folder, which may be another run's)."""
        if stop.reason in FOLDER_STOPS:
            return
        summary = {
            "run_dir": str(self.run_dir),
            "rounds_completed": 0,
            "stopped_early": True,
            "stop_reason": stop.reason,
            "stop_detail": str(stop),
            "policy_declined": _by_name(self.nodes.policy_declined),
            "no_statistics": _by_name(self.nodes.no_statistics),
            "settings": self._config_dict(),
        }
        write_json(self.run_dir / SUMMARY_FILE, summary)

    def _checkpoint(self, state: RunState) -> None:
        save_checkpoint(self.run_dir, state, key=self.key, config=self._config_dict())
        write_json(self.run_dir / HISTORY_FILE, state.history)

    def _save_best(self, state: RunState) -> None:
        save_model(
            self.run_dir / BEST_MODEL_FILE,
            state_from_arrays(state.best),
            key=self.key,
            spec=state.spec,
            schema=state.schema,
            round=state.early_stopping.best_round,
            metrics=state.entry(state.early_stopping.best_round),
            **self._carried(state),
        )

    def _carried(self, state: RunState) -> dict[str, Any]:
        """What a model file needs to be used without this run: its preprocessing (so
        data is cleaned as in training) and the training settings (fl-client train)."""
        return {
            "preprocessing": preprocessing_metadata(state.prep),
            "preprocessing_source": "federated statistics",
            "train_config": self.config.to_dict(),
        }

    def _config_dict(self) -> dict[str, Any]:
        return {**self.settings.to_dict(), **self.config.to_dict()}

    # -- the end -----------------------------------------------------------------------

    def _finish(self, state: RunState, stop_reason: str, detail: str) -> dict[str, Any]:
        """Final validation, export, history, summary, curves and the best model. Each
        part that talks to nodes is guarded: the summary is always written."""
        finish_started = time.perf_counter()
        unjudged = state.entry(state.model_round).get("val_loss") is None
        if self.settings.validation == "federated" and state.model_round > 0 and unjudged:
            try:
                metrics = self.loop.federated_metrics(
                    state.current, state.prep, state.nodes, int8=False
                )
                self._selector(state).observe(state.model_round, state.current, metrics)
                state.judged_in[state.model_round] = state.round + 1
            except RunStopped as stop:
                log(WARNING, "Final validation skipped: %s", stop)
        best_round = state.early_stopping.best_round
        best = state.entry(best_round)
        export = None
        if self.settings.export_int8:
            try:
                export = self._export(state)
            except RunStopped as stop:
                log(WARNING, "Export skipped: %s", stop)
        test = self._test(state)
        eps = [h["epsilon_max"] for h in state.history if h.get("epsilon_max") is not None]
        summary = {
            "run_dir": str(self.run_dir),
            "rounds_completed": state.round,
            "best_round": best_round,
            "stopped_early": stop_reason != "completed",
            "stop_reason": stop_reason,
            "stop_detail": detail,
            "best_metrics": {k: best.get(k) for k in best if k.startswith("val_")},
            "epsilon_max": max(eps) if eps else None,
            "declined_silos": state.declined_silos,
            "policy_declined": _by_name(state.nodes.policy_declined),
            "no_statistics": _by_name(state.nodes.no_statistics),
            "best_model": str(self.run_dir / BEST_MODEL_FILE),
            "checkpoint": str(self.run_dir / CHECKPOINT_FILE),
            "export": export,
            "seconds": round(state.elapsed, 3),
            "timing": {
                **self.timing,
                "finish_seconds": round(time.perf_counter() - finish_started, 3),
            },
            "settings": self._config_dict(),
            "tracking": self.tracker.describe(),
            "test": test,
        }
        if self.settings.personal:
            summary["personalized"] = _figures(best, "", best_round)
            summary["global"] = _figures(best, "global_", best_round)
        state.history.sort(key=lambda h: h["round"])
        state.stop_reason, state.stop_detail = stop_reason, detail
        self._checkpoint(state)  # so that a resume knows how the run ended
        write_json(self.run_dir / SUMMARY_FILE, summary)
        plot_curves(state.history, self.run_dir / CURVES_FILE)
        self._save_best(state)  # always the checkpoint's best, even after a crash between
        self.tracker.finish(state.history, summary, self.run_dir)
        return summary

    def _test(self, state: RunState) -> dict[str, Any] | None:
        """The once-only test evaluation of the kept model (``silo-test-fraction``):
        sent when the run has trained and not scored its test rows before (a resumed
        run that did keeps those figures and sends nothing). Never fatal."""
        if self.settings.silo_test_fraction <= 0 or state.round == 0:
            return None
        if state.test is not None:
            log(
                WARNING,
                "The test rows were scored once already (round %s); not again",
                state.test.get("round"),
            )
            return state.test
        try:
            state.test = run_test(self.loop, state)
        except RunStopped as stop:
            log(WARNING, "Test evaluation skipped: %s", stop)
            return None
        return state.test

    def _export(self, state: RunState) -> dict[str, Any]:
        """The best model quantized to int8, encrypted, with sizes and accuracies:
        static int8 calibrated on the server's validation rows; with federated
        validation (no rows here) dynamic int8, which the silos can evaluate."""
        from core_training.models import quantize_int8
        from core_training.quantize import Int8Model, quantize_for_export
        from fl_common.modelfile import save_int8

        model = build_model(state.spec)
        model.load_state_dict(state_from_arrays(state.best))
        if self.settings.validation == "server":
            assert self.loop.validation is not None
            int8_model = quantize_for_export(model, self.loop.validation[0])
            fp32 = self.loop.server_metrics(state.best)["val_accuracy"]
            int8 = self.loop.model_metrics(int8_model.model)["val_accuracy"]
        else:  # both on the same nodes, in the same message round
            reason = "validation is federated: the server holds no rows to calibrate on"
            int8_model = Int8Model(quantize_int8(model), "dynamic", reason)
            both = self.loop.federated_metrics(state.best, state.prep, state.nodes)
            # with local layers the export is the global model: its own figures
            which = "global_" if self.settings.personal else ""
            fp32 = both.get(f"{which}val_accuracy")
            int8 = both.get(f"int8_{which}val_accuracy")
        path, int8_bytes = save_int8(
            self.run_dir / EXPORT_FILE,
            int8_model,
            key=self.key,
            spec=state.spec,
            schema=state.schema,
            round=state.early_stopping.best_round,
            fp32_accuracy=fp32,
            int8_accuracy=int8,
            **self._carried(state),
        )
        return {
            "path": str(path),
            "fp32_bytes": serialized_size(model.state_dict()),
            "int8_bytes": int8_bytes,
            "fp32_accuracy": fp32,
            "int8_accuracy": int8,
            "int8_method": int8_model.method,
            "int8_fallback_reason": int8_model.fallback_reason,
        }


def _figures(entry: dict[str, Any], prefix: str, model_round: int) -> dict[str, Any]:
    """A personalized run's accuracy of the personalized models (``prefix`` "") or of
    the global model ("global_") in the round ``entry`` describes: pooled over the
    silos' validation rows, the mean of the silos' own, and each silo's."""
    by_silo = entry.get(f"{prefix}val_accuracy_by_silo") or {}
    return {
        "round": model_round,
        "pooled_accuracy": entry.get(f"{prefix}val_accuracy"),
        "mean_accuracy": sum(by_silo.values()) / len(by_silo) if by_silo else None,
        "by_silo": by_silo,
    }


def _by_name(nodes: dict[int, str]) -> dict[str, str]:
    return {f"node {n}": reason for n, reason in sorted(nodes.items())}


def _server_key(settings: RunSettings) -> bytes:
    """The key for everything the server writes. With no key configured anywhere, a new
    one is made at the default location (outside every artifacts folder), once."""
    try:
        return resolve_key(settings.key_file or None)
    except KeyNotFoundError:
        if settings.key_file:
            raise
        path = generate_key_file(default_key_path())
        log(INFO, "Created a new encryption key at %s (keep it; artifacts need it)", path)
        return resolve_key(None)


def _log_round(entry: dict[str, Any], total: int, state: RunState) -> None:
    def fmt(key: str, spec: str = ".4f") -> str:
        value = entry.get(key)
        return "-" if value is None else format(value, spec)

    log(
        INFO,
        "[round %d/%d] clients %d (rejected %d, failed %d, declined %d) train_loss %s "
        "val_loss %s val_accuracy %s epsilon %s best round %d (%.1fs)",
        entry["round"],
        total,
        entry.get("num_clients", 0),
        entry.get("num_rejected", 0),
        entry.get("num_failed", 0),
        entry.get("num_declined", 0),
        fmt("train_loss"),
        fmt("val_loss"),
        fmt("val_accuracy"),
        fmt("epsilon_max", ".3f"),
        state.early_stopping.best_round,
        entry.get("seconds", 0.0),
    )
