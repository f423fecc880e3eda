"""How a simulated federation's round time grows with the number of clients and with
the rows each client holds.

``run(quick)`` returns a dict; ``python bench/bench_scale.py [--quick]`` prints it.
Every run is a real ``flwr run .`` (Ray simulation) on a private local SuperLink.

(a) clients: 10, 100 and 1,000 simulated silos, 10 sampled per round
    (``fraction-train`` = 10 / N), 500 training rows each (synthetic, 20 features, MLP
    (128, 64), 1 local epoch). The server's validation split is held at 2,000 rows so
    that its per-round evaluation does not grow with N. Per-round seconds are the mean
    over the rounds after the first; memory is the peak of the summed resident memory
    of the SuperLink and every process under it (SuperExec, ServerApp, Ray and its
    workers), sampled twice a second. Summing RSS counts the pages the processes share
    (torch's libraries) once per process, so it overstates the true footprint.
    The plain Flower app (``bench/plain_flower``) runs at the smallest and largest N
    too, so the growth that is Flower's own shows apart from ours.
(b) rows: 4 clients, all sampled, holding 1,000, 10,000 and 100,000 training rows
    each, 2 rounds; seconds of the second round against the local training inside it.

Quick mode (CI): 4 and 8 silos, 2 sampled, 2 rounds; rows 250 and 1,000.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
BENCH = Path(__file__).resolve().parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from harness.deploy_local import vmrss_kib  # noqa: E402
from harness.local_run import LocalFlwr, _children  # noqa: E402

FEATURES = 20
SAMPLED = 10
ROW_CLIENTS = 4  # clients in the rows series, all sampled every round
SERVER_VAL_ROWS = 2000
LOCAL_VAL = 0.2  # fedsilo's default local-val-fraction


def _total_rows(train_rows_per_client: int, clients: int) -> tuple[int, float]:
    """Synthetic rows and server-val-fraction giving each client ``train_rows_per_client``
    training rows and the server ``SERVER_VAL_ROWS`` validation rows."""
    pooled = round(train_rows_per_client * clients / (1 - LOCAL_VAL))
    total = pooled + SERVER_VAL_ROWS
    return total, SERVER_VAL_ROWS / total


class _PeakRSS:
    """Peak summed VmRSS (KiB) of the SuperLink's process tree while running."""

    def __init__(self, flwr: LocalFlwr, interval: float = 0.5) -> None:
        self.pattern = f"flower-superlink.*--port {flwr.env['FLWR_LOCAL_SUPERLINK_HTTP_API_PORT']}"
        self.interval, self.peak_kib = interval, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self) -> _PeakRSS:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            found = subprocess.run(["pgrep", "-f", self.pattern], capture_output=True, text=True)
            total = 0
            for pid in found.stdout.split():
                for p in [int(pid), *_children(int(pid))]:
                    total += vmrss_kib(p)
            self.peak_kib = max(self.peak_kib, total)


def _simulate(
    flwr: LocalFlwr, name: str, clients: int, rows: int, rounds: int, sampled: int
) -> dict[str, Any]:
    total, server_fraction = _total_rows(rows, clients)
    config = {
        "run-name": name,
        "dataset": "synthetic",
        "synthetic-rows": total,
        "synthetic-features": FEATURES,
        "server-val-fraction": server_fraction,
        "fraction-train": sampled / clients,
        "min-nodes": min(sampled, clients),
        "num-server-rounds": rounds,
        "local-epochs": 1,
        "batch-size": 32,
        "model": "mlp",
        "class-weighting": "none",
        "early-stopping-patience": 1000,
        "export-int8": False,
        "round-timeout": 3600.0,
    }
    with _PeakRSS(flwr) as rss:
        run = flwr.run(config, supernodes=clients, timeout=3600)
    if run.returncode != 0:
        raise RuntimeError(f"flwr run {name} failed:\n{run.output[-3000:]}")
    summary, history = run.summary, run.history
    rounds_ = [h for h in history if h["round"] > 0]
    later = rounds_[1:] or rounds_
    per_round = sum(h["seconds"] for h in later) / len(later)
    train = sum(h.get("train_seconds", 0.0) for h in later) / len(later)
    return {
        "clients": clients,
        "sampled_per_round": sampled,
        "train_rows_per_client": rows,
        "synthetic_rows": total,
        "rounds": len(rounds_),
        "clients_per_round": [h["num_clients"] for h in rounds_],
        "round_seconds": round(per_round, 3),
        # local training summed over the round's clients (they run two at a time here)
        "train_seconds_per_round": round(train, 3),
        "setup_seconds": summary["timing"]["setup_seconds"],
        "flwr_run_seconds": round(run.seconds, 2),
        "peak_rss_mib": round(rss.peak_kib / 1024, 1),
        "val_accuracy": rounds_[-1].get("val_accuracy"),
    }


def _plain(flwr: LocalFlwr, clients: int, rows: int, rounds: int) -> dict[str, Any]:
    """The same growth for the plain Flower app (bench/plain_flower): what Flower's
    simulation itself adds as N grows."""
    run = flwr.run(
        {
            "num-server-rounds": rounds,
            "fraction-train": SAMPLED / clients,
            "local-epochs": 1,
            "batch-size": 32,
            "rows-per-client": rows,
            "features": FEATURES,
        },
        supernodes=clients,
        timeout=3600,
        app=BENCH / "plain_flower",
    )
    match = re.search(r"round_ends=\[([^\]]*)\]", run.output)
    if run.returncode != 0 or not match:
        raise RuntimeError(f"plain Flower run failed:\n{run.output[-3000:]}")
    ends = [float(x) for x in match.group(1).split(",")]
    return {
        "clients": clients,
        "round_seconds": round((ends[-1] - ends[0]) / (len(ends) - 1), 3),
        "flwr_run_seconds": round(run.seconds, 2),
    }


def run(quick: bool = False) -> dict[str, Any]:
    # quick: the smallest federation that still samples fewer clients than it has
    counts = (4, 8) if quick else (10, 100, 1000)
    sampled = 2 if quick else SAMPLED
    row_sizes = (250, 1000) if quick else (1000, 10_000, 100_000)
    rounds = 2 if quick else 5
    out: dict[str, Any] = {"quick": quick, "features": FEATURES, "sampled": sampled}
    with tempfile.TemporaryDirectory(prefix="fedsilo-scale-") as tmp:
        flwr = LocalFlwr(Path(tmp))
        try:
            clients = {
                str(n): _simulate(flwr, f"clients-{n}", n, 500, rounds, sampled) for n in counts
            }
            # quick mode leaves plain Flower out (four runs instead of six)
            ends = () if quick else (counts[0], counts[-1])
            plain = {str(n): _plain(flwr, n, 500, rounds) for n in ends}
            rows = {
                str(r): _simulate(flwr, f"rows-{r}", ROW_CLIENTS, r, 2, ROW_CLIENTS)
                for r in row_sizes
            }
        finally:
            flwr.stop()
    out["clients"], out["rows"], out["plain_flower"] = clients, rows, plain
    first, last = clients[str(counts[0])], clients[str(counts[-1])]
    out["round_seconds_growth"] = round(last["round_seconds"] / first["round_seconds"], 3)
    if plain:
        p_first, p_last = plain[str(counts[0])], plain[str(counts[-1])]
        out["plain_round_seconds_growth"] = round(
            p_last["round_seconds"] / p_first["round_seconds"], 3
        )
    out["peak_rss_mib_max"] = max(c["peak_rss_mib"] for c in clients.values())
    small, large = rows[str(row_sizes[0])], rows[str(row_sizes[-1])]
    out["rows_growth"] = row_sizes[-1] / row_sizes[0]
    out["round_seconds_rows_growth"] = round(large["round_seconds"] / small["round_seconds"], 3)
    out["train_seconds_rows_growth"] = round(
        large["train_seconds_per_round"] / small["train_seconds_per_round"], 3
    )
    return out


if __name__ == "__main__":
    print(json.dumps(run(quick="--quick" in sys.argv), indent=2))
