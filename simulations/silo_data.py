"""Silo files from a built-in data set, for trying fedsilo without data of your own.

    python -m simulations.silo_data --dataset breast-cancer \
        --silos hospital-a,hospital-b,hospital-c --out data

writes ``data/schema.toml`` (the federation's schema), one ``data/<silo>.csv`` per silo
(the rows a simulation would partition among them) and ``data/test.csv``: the rows held
out for the server, which no silo holds.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

from core_training.data import write_csv
from core_training.partition import partition
from fl_common.data import pooled_split
from fl_common.settings import RunSettings


def make_silo_data(
    folder: str | Path,
    *,
    silos: int,
    dataset: str = "digits",
    partitioner: str = "iid",
    alpha: float = 0.5,
    seed: int = 0,
    server_val_fraction: float = 0.2,
) -> tuple[Path, list[Path]]:
    """Write one folder per silo (``silo-<i>/data.csv``, ``schema.toml``) and the
    federation's ``schema.toml``. The silos share the rows a simulation would
    partition (:func:`fl_common.data.pooled_split`), so the rows the server holds out
    for ``validation="server"`` on a built-in set never reach a silo."""
    folder = Path(folder)
    pool, _ = _pooled(dataset, seed, server_val_fraction, partitioner, alpha)
    parts = partition(
        pool.y, num_partitions=silos, method=partitioner, alpha=alpha, min_size=10, seed=seed
    )
    folder.mkdir(parents=True, exist_ok=True)
    schema = pool.schema.save(folder / "schema.toml")
    out = []
    for i, rows in enumerate(parts):
        silo = folder / f"silo-{i}"
        silo.mkdir(exist_ok=True)
        write_csv(pool.subset(rows), silo / "data.csv")
        pool.schema.save(silo / "schema.toml")
        out.append(silo)
    return schema, out


def _pooled(dataset: str, seed: int, server_val_fraction: float, partitioner: str, alpha: float):
    """The rows a simulation partitions among its silos, and those the server holds out."""
    settings = RunSettings(
        dataset=dataset,
        server_val_fraction=server_val_fraction,
        partitioner=partitioner,
        dirichlet_alpha=alpha,
    )
    return pooled_split(settings, seed)


def write_silo_files(
    out: str | Path,
    names: list[str],
    *,
    dataset: str = "breast-cancer",
    partitioner: str = "iid",
    alpha: float = 0.5,
    seed: int = 0,
    server_val_fraction: float = 0.2,
) -> list[Path]:
    """``out/schema.toml``, ``out/<name>.csv`` per silo and ``out/test.csv``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        schema, folders = make_silo_data(
            tmp,
            silos=len(names),
            dataset=dataset,
            partitioner=partitioner,
            alpha=alpha,
            seed=seed,
            server_val_fraction=server_val_fraction,
        )
        written = [Path(shutil.copyfile(schema, out / "schema.toml"))]
        for name, folder in zip(names, folders, strict=True):
            written.append(Path(shutil.copyfile(folder / "data.csv", out / f"{name}.csv")))
    _, held_out = _pooled(dataset, seed, server_val_fraction, partitioner, alpha)
    written.append(write_csv(held_out, out / "test.csv"))
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m simulations.silo_data", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--dataset", default="breast-cancer")
    parser.add_argument("--silos", default="silo-0,silo-1", help="comma-separated silo names")
    parser.add_argument("--partitioner", default="iid")
    parser.add_argument("--alpha", type=float, default=0.5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="data")
    args = parser.parse_args(argv)
    names = [n.strip() for n in args.silos.split(",") if n.strip()]
    for path in write_silo_files(
        args.out,
        names,
        dataset=args.dataset,
        partitioner=args.partitioner,
        alpha=args.alpha,
        seed=args.seed,
    ):
        rows = sum(1 for _ in path.open()) - 1 if path.suffix == ".csv" else None
        print(f"wrote {path}" + (f" ({rows} rows)" if rows is not None else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
