"""Run the benchmark suite and write BENCHMARKS.md and bench/results.json.

    python bench/run.py            # the whole suite (about 1.5 hours on 2 cores)
    python bench/run.py --quick    # a few minutes; what CI runs (it asserts no speed)
    python bench/run.py --only privacy,federation

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

SUITES = ("privacy", "export", "federation", "overhead", "scale")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, a few minutes")
    parser.add_argument("--only", default=",".join(SUITES), help="comma-separated suites")
    parser.add_argument("--out", default=str(ROOT / "BENCHMARKS.md"))
    parser.add_argument("--json", default=str(BENCH / "results.json"))
    args = parser.parse_args(argv)
    chosen = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = set(chosen) - set(SUITES)
    if unknown:
        parser.error(f"unknown suite(s) {sorted(unknown)}; choose from {', '.join(SUITES)}")
    results: dict[str, Any] = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "quick": args.quick,
        "machine": f"{platform.machine()}, {_cpus()} CPU(s), Python {platform.python_version()}",
        "command": "python bench/run.py"
        + (" --quick" if args.quick else "")
        + (f" --only {','.join(chosen)}" if tuple(chosen) != SUITES else ""),
    }
    merged = _load(Path(args.json))
    for name in chosen:
        module = importlib.import_module(f"bench_{name}")
        started = time.perf_counter()
        print(f"[bench] {name} ...", file=sys.stderr, flush=True)
        results[name] = module.run(quick=args.quick)
        results[name]["suite_seconds"] = round(time.perf_counter() - started, 1)
        results[name]["when"] = datetime.now(UTC).isoformat(timespec="seconds")
        # Written after every suite, so a failure later keeps what was measured. The
        # results of suites not run this time are kept, so a partial run erases nothing.
        merged = {**merged, **results}
        _write(Path(args.json), json.dumps(merged, indent=2) + "\n")
        _write(Path(args.out), render(merged))
    print(f"[bench] wrote {args.out} and {args.json}", file=sys.stderr)
    return 0


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
