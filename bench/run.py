"""Run the benchmark suite and write BENCHMARKS.md and bench/results.json.

    python bench/run.py            # the whole suite (about 1.5 hours on 2 cores)
    python bench/run.py --quick    # a few minutes; what CI runs (it asserts no speed)
    python bench/run.py --only privacy,federation
    python bench/run.py --only federation --arms iid_fedavg,dirichlet0.3_fedavg
    python bench/run.py --only dp_accuracy
    python bench/run.py --only personalization
    python bench/run.py --render   # BENCHMARKS.md again from bench/results.json
    python bench/run.py --gpu-result gpu.json   # what bench/gpu_check.py printed on a GPU

Every figure is a ratio or a comparison measured side by side in the same run: the
machines this runs on are shared and noisy, so absolute seconds mean little.
"""

from __future__ import annotations

import argparse
import importlib
import json
import platform
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
BENCH = Path(__file__).resolve().parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
if str(BENCH) not in sys.path:
    sys.path.insert(0, str(BENCH))

SUITES = (
    "privacy",
    "accounting",
    "export",
    "federation",
    "dp_accuracy",
    "overhead",
    "scale",
    "personalization",
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, a few minutes")
    parser.add_argument("--only", default=",".join(SUITES), help="comma-separated suites")
    parser.add_argument("--out", default=str(ROOT / "BENCHMARKS.md"))
    parser.add_argument("--json", default=str(BENCH / "results.json"))
    parser.add_argument(
        "--arms",
        help="comma-separated arms of the federation suite (default: all of them), "
        "e.g. iid_fedavg,dirichlet0.3_fedavg",
    )
    parser.add_argument(
        "--render",
        action="store_true",
        help="run nothing: write the markdown again from the results file",
    )
    parser.add_argument(
        "--gpu-result",
        metavar="FILE",
        help="run nothing: add what `python bench/gpu_check.py` printed (on a machine with "
        "a GPU) to the results file, and write the markdown again",
    )
    args = parser.parse_args(argv)
    if args.gpu_result:
        merged = {**_load(Path(args.json)), "gpu": _gpu_result(Path(args.gpu_result))}
        _write(Path(args.json), json.dumps(merged, indent=2) + "\n")
        _write(Path(args.out), render(merged))
        print(f"[bench] added {args.gpu_result} to {args.json}; wrote {args.out}", file=sys.stderr)
        return 0
    if args.render:
        _write(Path(args.out), render(_load(Path(args.json))))
        print(f"[bench] wrote {args.out} from {args.json}", file=sys.stderr)
        return 0
    chosen = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = set(chosen) - set(SUITES)
    if unknown:
        parser.error(f"unknown suite(s) {sorted(unknown)}; choose from {', '.join(SUITES)}")
    arms = [a.strip() for a in args.arms.split(",") if a.strip()] if args.arms else None
    if arms is not None and "federation" not in chosen:
        parser.error("--arms picks arms of the federation suite; add --only federation")
    results: dict[str, Any] = {
        "when": _now(),
        "quick": args.quick,
        "machine": f"{platform.machine()}, {_cpus()} CPU(s), Python {platform.python_version()}",
        "command": "python bench/run.py"
        + (" --quick" if args.quick else "")
        + (f" --only {','.join(chosen)}" if tuple(chosen) != SUITES else "")
        + (f" --arms {','.join(arms)}" if arms else ""),
    }
    merged = _load(Path(args.json))
    for name in chosen:
        module = importlib.import_module(f"bench_{name}")
        started = time.perf_counter()
        print(f"[bench] {name} ...", file=sys.stderr, flush=True)
        if name == "federation":
            # Written after every arm as well: the suite runs for hours, and a run
            # stopped early keeps what it measured (the section lists what is missing).
            earlier = merged.get(name)

            def partial(
                so_far: dict[str, Any], name=name, before=merged, module=module, earlier=earlier
            ) -> None:
                print(f"[bench] {name}: {so_far['arms_done']}", file=sys.stderr, flush=True)
                now = {**so_far, "when": _now(), "command": results["command"]}
                snapshot = {**before, **results, name: module.carry_arms(now, earlier)}
                _write(Path(args.json), json.dumps(snapshot, indent=2) + "\n")
                _write(Path(args.out), render(snapshot))

            results[name] = module.carry_arms(
                module.run(quick=args.quick, arms=arms, on_arm=partial), earlier
            )
        else:
            results[name] = module.run(quick=args.quick)
        results[name]["suite_seconds"] = round(time.perf_counter() - started, 1)
        results[name]["command"] = results["command"]
        results[name]["when"] = _now()
        # Written after every suite, so a failure later keeps what was measured. The
        # results of suites not run this time are kept, so a partial run erases nothing.
        merged = {**merged, **results}
        _write(Path(args.json), json.dumps(merged, indent=2) + "\n")
        _write(Path(args.out), render(merged))
    print(f"[bench] wrote {args.out} and {args.json}", file=sys.stderr)
    return 0


def _gpu_result(path: Path) -> dict[str, Any]:
    """The JSON object ``bench/gpu_check.py`` printed, refused unless it is one: a check
    that ran on CUDA (a CPU-only machine's output measures no GPU) and says when."""
    try:
        result = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise SystemExit(
            f"error: {path} is not the JSON bench/gpu_check.py prints: {exc}"
        ) from None
    needed = {"when", "ok", "cuda_fp32", "cuda_amp", "cpu"}
    if not isinstance(result, dict) or not needed <= set(result):
        missing = sorted(needed - set(result)) if isinstance(result, dict) else sorted(needed)
        raise SystemExit(
            f"error: {path} lacks {', '.join(missing)}: give the output of "
            "`python bench/gpu_check.py` run on a machine with a CUDA GPU"
        )
    return result


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)


def _cpus() -> int:
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def _load(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def render(r: dict[str, Any]) -> str:
    from render import render_markdown

    return render_markdown(r)


if __name__ == "__main__":
    sys.exit(main())
