"""Image silos from scikit-learn's digits, for trying image federations offline.

    python -m simulations.image_files --out images
    python -m simulations.image_files --silos lab-a,lab-b --size 16 --out images

writes ``images/schema.toml`` (an ``[image]`` schema: one channel, ``size`` x ``size``,
classes 0 to 9) and the digits as PNG (or JPEG) files in class sub-folders: all of
them in ``images/all/`` without ``--silos``; with ``--silos`` one folder per silo (the
rows a simulation would partition among them, IID) and ``images/test/``, the rows held
out for the server, which no silo holds. The 8 x 8 digits are scaled from 0..16 to
0..255 and enlarged by repeating pixels, so ``size`` is a multiple of 8.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from core_training.data import Table
from core_training.partition import partition
from core_training.schema import Schema
from fl_common.data import pooled_split
from fl_common.settings import RunSettings

FORMATS = {"png": ("PNG", ".png"), "jpeg": ("JPEG", ".jpg")}


def digit_pixels(X: np.ndarray, size: int = 8) -> np.ndarray:
    """Digits rows (values 0..16, 64 per row) as uint8 images (N, 1, size, size)."""
    if size < 8 or size % 8:
        raise ValueError(f"size must be a multiple of 8, got {size}")
    images = np.rint(np.asarray(X, dtype=np.float64).reshape(-1, 8, 8) * 255 / 16)
    factor = size // 8
    images = images.repeat(factor, axis=1).repeat(factor, axis=2)
    return images.astype(np.uint8)[:, None]


def write_images(
    pixels: np.ndarray, labels: list[str], folder: str | Path, *, fmt: str = "png"
) -> Path:
    """uint8 images (N, C, H, W) as ``folder/<label>/<n>.png`` (or ``.jpg``), one
    sub-folder per label; C is 1 (grayscale) or 3 (RGB)."""
    from PIL import Image

    kind, suffix = FORMATS[fmt]
    folder = Path(folder)
    for n, (image, label) in enumerate(zip(pixels, labels, strict=True)):
        (folder / label).mkdir(parents=True, exist_ok=True)
        array = image[0] if image.shape[0] == 1 else image.transpose(1, 2, 0)
        Image.fromarray(np.ascontiguousarray(array)).save(
            folder / label / f"{n:05d}{suffix}", kind, **({"quality": 95} if fmt == "jpeg" else {})
        )
    return folder


def make_digit_images(
    out: str | Path,
    *,
    silos: list[str] | None = None,
    size: int = 8,
    fmt: str = "png",
    seed: int = 0,
    server_val_fraction: float = 0.2,
) -> list[tuple[Path, int]]:
    """Write the schema and the image folders; (path, images written) of each."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    pool, held_out = pooled_split(
        RunSettings(dataset="digits", server_val_fraction=server_val_fraction), seed
    )
    classes = tuple(pool.schema.classes)
    schema = Schema.image(classes, 1, size, size, label="digit")
    written = [(schema.save(out / "schema.toml"), 0)]
    if not silos:
        groups = {"all": _joined(pool, held_out)}
    else:
        parts = partition(pool.y, num_partitions=len(silos), method="iid", min_size=10, seed=seed)
        groups = {
            name: (pool.X[rows], pool.y[rows]) for name, rows in zip(silos, parts, strict=True)
        }
        groups["test"] = (held_out.X, held_out.y)
    for name, (X, y) in groups.items():
        labels = [str(classes[int(c)]) for c in y]
        folder = write_images(digit_pixels(X, size), labels, out / name, fmt=fmt)
        written.append((folder, len(y)))
    return written


def _joined(pool: Table, held_out: Table) -> tuple[np.ndarray, np.ndarray]:
    return np.concatenate([pool.X, held_out.X]), np.concatenate([pool.y, held_out.y])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m simulations.image_files", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--out", default="images")
    parser.add_argument(
        "--silos", default="", help="comma-separated silo names (default: one folder)"
    )
    parser.add_argument("--size", type=int, default=8, help="image side, a multiple of 8")
    parser.add_argument("--format", choices=sorted(FORMATS), default="png")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    names = [n.strip() for n in args.silos.split(",") if n.strip()]
    for path, count in make_digit_images(
        args.out, silos=names, size=args.size, fmt=args.format, seed=args.seed
    ):
        print(f"wrote {path}" + (f"/ ({count} images)" if count else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
