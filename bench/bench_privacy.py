"""What privacy costs: encrypted vs plain checkpoints, private vs plain local epochs.

``run(quick)`` returns a dict (``python bench/bench_privacy.py [--quick]`` prints it as
JSON). Times are medians of interleaved repeats in this process, after one warm-up each.

(a) storage: ``store.save_state`` / ``load_state`` (AES-256-GCM, chunked, atomic with
    fsync) against plain ``torch.save(path)`` / ``torch.load(path, weights_only=True)``
    of the same state dict (100 MB; 10 MB quick), once per AES backend available.
    ``torch_save_atomic`` is torch.save to a temp file + fsync + rename: the durability
    part of the store's cost, without encryption. Files live in a temp folder; loads read
    from the page cache, so they measure CPU cost, not the disk.
(b) local training through the shared trainer (``core_training.trainer.fit``), plain
    and under DP-SGD in each ``grad_sample_mode``: book-keeping clipping (fedsilo's
    default), Opacus's ghost clipping, hooks, functorch and expanded weights (these
    three materialize per-sample gradients); a mode that cannot run on the model is
    reported with its error. Two models: the MLP (128, 64) on synthetic rows, one
    epoch, and the digits CNN as the default digits run builds it, on the digits rows,
    for as many epochs as give it about the MLP's number of steps. Poisson sampling;
    one torch thread by default. Memory is
    measured in a fresh child process per arm on Linux: the kernel's peak-RSS mark
    (VmHWM) is reset just before the epoch, so ``peak_extra_mb`` is the resident memory
    the epoch added on top of what the process already held (model, data, torch runtime);
    ``process_peak_mb`` is the whole process's peak RSS during the epoch. Storage memory
    is measured the same way per operation (a load's extra includes the loaded tensors).
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from core_training.models import ModelSpec, build_model  # noqa: E402
from privacy import crypto, store  # noqa: E402
from privacy._fsio import atomic_write  # noqa: E402

MB = 1024 * 1024


# --- (a) storage ----------------------------------------------------------------------


def _state_dict(size_mb: int) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    per_tensor = 2 * MB // 4  # 2 MB float32 tensors, like large linear layers
    return {f"layer{i}.weight": torch.randn(per_tensor, generator=gen) for i in range(size_mb // 2)}


def _timed(fn: Any) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def bench_storage(size_mb: int, repeats: int) -> dict[str, Any]:
    state = _state_dict(size_mb)
    nbytes = sum(t.numel() * t.element_size() for t in state.values())
    key = os.urandom(32)
    backends = crypto.available_backends()
    with tempfile.TemporaryDirectory(prefix="bench-privacy-") as tmp:
        folder = Path(tmp)
        plain, enc = folder / "plain.pt", folder / "enc.bin"

        def atomic_torch_save() -> None:
            with atomic_write(folder / "atomic.pt") as handle:
                torch.save(state, handle)

        arms: dict[str, Any] = {
            "torch_save": lambda: torch.save(state, plain),
            "torch_save_atomic": atomic_torch_save,
            "torch_load": lambda: torch.load(plain, weights_only=True),
        }

        def save() -> None:
            store.save_state(enc, state, key=key, kind="model")

        def load() -> None:
            store.load_state(enc, key=key, kind="model")

        for name in backends:
            arms[f"save_state[{name}]"] = (name, save)
            arms[f"load_state[{name}]"] = (name, load)
        times: dict[str, list[float]] = {arm: [] for arm in arms}
        for round_ in range(repeats + 1):  # round 0 warms up caches and is dropped
            for arm, action in arms.items():
                if isinstance(action, tuple):
                    with crypto.using_backend(action[0]):
                        if arm.startswith("load"):  # load what this backend saved
                            store.save_state(enc, state, key=key, kind="model")
                        elapsed = _timed(action[1])
                else:
                    if arm == "torch_load":
                        torch.save(state, plain)
                    elapsed = _timed(action)
                if round_:
                    times[arm].append(elapsed)
        loaded, _ = store.load_state(enc, key=key, kind="model")
        assert all(torch.equal(loaded[k], state[k]) for k in state)
        enc_size = enc.stat().st_size
        plain_size = plain.stat().st_size

    median = {arm: statistics.median(ts) for arm, ts in times.items()}
    size = nbytes / MB
    out: dict[str, Any] = {
        "state_dict_mb": round(size, 1),
        "file_mb": {"plain": round(plain_size / MB, 2), "encrypted": round(enc_size / MB, 2)},
        "seconds": {arm: round(t, 4) for arm, t in median.items()},
        "mb_per_s": {arm: round(size / t, 1) for arm, t in median.items()},
    }
    for name in backends:
        out[f"save_ratio[{name}]"] = round(median[f"save_state[{name}]"] / median["torch_save"], 2)
        out[f"save_ratio_vs_atomic[{name}]"] = round(
            median[f"save_state[{name}]"] / median["torch_save_atomic"], 2
        )
        out[f"load_ratio[{name}]"] = round(median[f"load_state[{name}]"] / median["torch_load"], 2)
    out["default_backend"] = crypto.backend_name()
    return out


# --- (b) private vs plain epoch -------------------------------------------------------

MLP_SPEC = {"kind": "mlp", "num_classes": 2, "hidden_sizes": (128, 64), "dropout": 0.1}


def _data(rows: int, features: int) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    X = torch.randn(rows, features, generator=gen)
    y = (X[:, :3].sum(1) + 0.3 * torch.randn(rows, generator=gen) > 0).long()
    return X, y


def _task(model: str, rows: int) -> tuple[ModelSpec, torch.Tensor, torch.Tensor]:
    """The model and its training rows: the MLP on ``rows`` synthetic rows of 20
    features, or the digits CNN (built as the default digits run builds it) on the
    first ``rows`` rows of digits, standardized."""
    if model == "mlp":
        X, y = _data(rows, 20)
        return ModelSpec(in_features=20, **MLP_SPEC), X, y
    from core_training.config import TrainConfig
    from core_training.data import load_builtin
    from core_training.pipeline import model_spec_for

    table = load_builtin("digits")
    X = torch.as_tensor(table.X[:rows], dtype=torch.float32)
    X = (X - X.mean(0)) / (X.std(0) + 1e-6)
    spec = model_spec_for(table, TrainConfig(model="cnn"))
    return spec, X, torch.as_tensor(table.y[:rows], dtype=torch.long)


# plain, then DP-SGD in each grad_sample_mode: "private" is book-keeping clipping
# (fedsilo's default); ghost is Opacus's clipping without per-sample gradients; the
# others materialize per-sample gradients.
MODES = {
    "private": "bookkeeping",
    "private_ghost": "ghost",
    "private_hooks": "hooks",
    "private_functorch": "functorch",
    "private_ew": "ew",
}
ARMS = ("plain", *MODES)


def _fit(arm: str, model: str, rows: int, batch_size: int, epochs: int) -> tuple[float, int]:
    """``epochs`` epochs of the shared trainer (``core_training.trainer.fit``) for an arm."""
    import warnings

    from core_training.config import TrainConfig
    from core_training.trainer import fit
    from privacy.dp import DPSession

    spec, X, y = _task(model, rows)
    torch.manual_seed(0)
    net = build_model(spec)
    config = TrainConfig(
        local_epochs=epochs,
        batch_size=batch_size,
        class_weighting="none",
        optimizer="sgd",
        learning_rate=0.05,
    )
    privatize = None
    if arm != "plain":
        privatize = DPSession(
            max_grad_norm=1.0,
            delta=1e-5,
            noise_multiplier=1.0,
            epochs=epochs,
            grad_sample_mode=MODES[arm],
        )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "secure RNG turned off": fine for a benchmark
        result = fit(net, X.numpy(), y.numpy(), config, privatize=privatize)
    return float(result.metrics["seconds"]), result.steps


def bench_epoch(
    model: str, rows: int, batch_size: int, epochs: int, repeats: int, threads: int
) -> dict[str, Any]:
    """Plain and every private arm: ``epochs`` epochs each of the shared trainer,
    interleaved, medians after a warm-up round."""
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        times: dict[str, list[float]] = {arm: [] for arm in ARMS}
        steps: dict[str, int] = {}
        failed: dict[str, str] = {}
        for round_ in range(repeats + 1):
            for arm in ARMS:
                if arm in failed:
                    continue
                try:
                    seconds, steps[arm] = _fit(arm, model, rows, batch_size, epochs)
                except Exception as error:  # a mode Opacus cannot apply to this model
                    failed[arm] = f"{type(error).__name__}: {error}"[:300]
                    times.pop(arm)
                    continue
                if round_:
                    times[arm].append(seconds)
    finally:
        torch.set_num_threads(previous_threads)
    median = {arm: statistics.median(ts) for arm, ts in times.items()}
    task = {"model": model, "rows": rows, "batch_size": batch_size, "epochs": epochs}
    memory = {
        arm: _in_child({"task": "epoch", "arm": arm, "threads": threads, **task}) for arm in times
    }
    spec, X, _ = _task(model, rows)
    out: dict[str, Any] = {
        **task,
        "features": X.shape[1],
        "layers": spec.hidden_sizes if model == "mlp" else spec.channels,
        "torch_threads": threads,
        "steps": steps,
        "epoch_seconds": {arm: round(t, 4) for arm, t in median.items()},
        "time_ratio": round(median["private"] / median["plain"], 2),
        "time_ratios": {arm: round(median[arm] / median["plain"], 2) for arm in median},
        "failed_modes": failed,
        "memory": memory,
    }
    if all("peak_extra_mb" in m for m in memory.values()):
        extra = {arm: memory[arm]["peak_extra_mb"] for arm in memory}
        out["epoch_peak_extra_ratio"] = round(extra["private"] / max(extra["plain"], 0.1), 2)
        peak = {arm: memory[arm]["process_peak_mb"] for arm in memory}
        out["process_peak_ratio"] = round(peak["private"] / peak["plain"], 2)
    return out


def _status_kb(field: str) -> int | None:
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def _in_child(task: dict[str, Any]) -> dict[str, Any]:
    """Run one memory measurement in a fresh interpreter, so arms cannot share a peak."""
    done = subprocess.run(
        [sys.executable, __file__, "--memory-child", json.dumps(task)],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def _peak_during(action: Any) -> dict[str, Any]:
    """Resident memory ``action`` adds at its peak, on top of what the process held."""
    before = _status_kb("VmRSS")
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")  # reset the kernel's peak-RSS mark: measure the action alone
    except OSError:
        before = None
    action()
    peak = _status_kb("VmHWM")
    if before is None or peak is None:
        import resource

        peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # Linux: KiB, whole life
        return {"process_peak_mb": round(peak_kb / 1024, 1)}
    return {
        "rss_before_mb": round(before / 1024, 1),
        "process_peak_mb": round(peak / 1024, 1),
        "peak_extra_mb": round((peak - before) / 1024, 1),
    }


def _memory_child(args: dict[str, Any]) -> dict[str, Any]:
    if args["task"] == "epoch":
        torch.set_num_threads(args["threads"])
        fit_args = (args["arm"], args["model"], args["rows"], args["batch_size"])
        _fit(*fit_args, 1)  # import and warm up
        return _peak_during(lambda: _fit(*fit_args, args["epochs"]))
    state = _state_dict(args["size_mb"])
    key = bytes(32)  # a throwaway key for a throwaway file
    folder = Path(args["folder"])
    plain, enc = folder / "plain.pt", folder / "enc.bin"
    op = args["op"]
    if op == "load_state":
        store.save_state(enc, state, key=key, kind="model")
    if op == "torch_load":
        torch.save(state, plain)
    if op.endswith("load"):
        del state
    actions = {
        "torch_save": lambda: torch.save(state, plain),
        "save_state": lambda: store.save_state(enc, state, key=key, kind="model"),
        "torch_load": lambda: torch.load(plain, weights_only=True),
        "load_state": lambda: store.load_state(enc, key=key, kind="model"),
    }
    return _peak_during(actions[op])


def storage_memory(size_mb: int) -> dict[str, Any]:
    """Peak extra resident memory of each storage operation, in fresh processes."""
    with tempfile.TemporaryDirectory(prefix="bench-privacy-mem-") as tmp:
        out = {
            op: _in_child({"task": "storage", "op": op, "size_mb": size_mb, "folder": tmp})
            for op in ("torch_save", "save_state", "torch_load", "load_state")
        }
    return {op: {"peak_extra_mb": m.get("peak_extra_mb")} for op, m in out.items()}


# --- entry points ---------------------------------------------------------------------


def run(quick: bool = False, threads: int = 1) -> dict[str, Any]:
    """Both benchmarks; ``quick`` shrinks sizes about tenfold. ``threads`` is torch's
    intra-op thread count for the epochs: 1 by default, because on a small shared machine
    idle OpenMP threads spinning against other processes swamp the numbers being compared."""
    sizes = (10,) if quick else (10, 100)
    storages = []
    for size in sizes:
        storage = bench_storage(size_mb=size, repeats=3 if size >= 100 or quick else 7)
        storage["memory"] = storage_memory(size_mb=size)
        storages.append(storage)
    # The CNN trains on all 1797 digits rows (7 batches of 256 an epoch), for as many
    # epochs as give it about the MLP's number of steps.
    if quick:
        epochs = {
            "mlp": bench_epoch("mlp", 1_000, 256, epochs=1, repeats=1, threads=threads),
            "cnn": bench_epoch("cnn", 1_797, 256, epochs=1, repeats=1, threads=threads),
        }
    else:
        epochs = {
            "mlp": bench_epoch("mlp", 20_000, 256, epochs=1, repeats=3, threads=threads),
            "cnn": bench_epoch("cnn", 1_797, 256, epochs=10, repeats=3, threads=threads),
        }
    return {
        "bench": "privacy",
        "quick": quick,
        "torch": torch.__version__,
        "cpu_count": os.cpu_count(),
        "storages": storages,
        "dp_epoch": epochs,
    }


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--memory-child":
        print(json.dumps(_memory_child(json.loads(sys.argv[2]))))
    else:
        print(json.dumps(run(quick="--quick" in sys.argv[1:]), indent=2))
