"""Image silos: a folder of class sub-folders (PNG or JPEG) or an NPZ of (N, C, H, W)
pixels, read into the same :class:`~core_training.data.Table` as tabular data.

A folder silo looks like ``data/cat/001.png, data/dog/002.jpg, ...``: one sub-folder
per class, named as the schema's classes. Pillow decodes the files (what torchvision's
``ImageFolder`` uses as well). Every image must already have the schema's size and
colour mode: grayscale (``L``, or black-and-white ``1``) for one channel, ``RGB`` (or a
palette without transparency) for three. Nothing is resized or converted between
grayscale and colour, because a silo that did so would train on other pixels than its
peers without knowing it; a file that differs is a problem, like a bad CSV cell.

Each problem (unreadable or damaged file, wrong size, wrong mode, a file that is not
PNG or JPEG, a folder that is not a class, an empty class folder) is collected with the
file's path, and all of them are reported in one :class:`DataError`.

Pixel values become floats in [0, 1] (``uint8 / 255``), flattened in channel, row,
column order: one table column per pixel value, as the schema's features say. They are
float32: values in [0, 1] need no more, and images have many columns.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .data import Table, _data_error, _encode_label, read_npz
from .schema import IMAGE_CHANNELS, DataError, Schema

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
FORMATS = ("PNG", "JPEG")
# Pillow modes read as each channel count (converted without loss), and what to call others
MODES = {1: ("L", "1"), 3: ("RGB", "P")}
MODE_NAMES = {
    "1": "black and white",
    "L": "grayscale",
    "LA": "grayscale with alpha (LA)",
    "P": "palette",
    "RGB": "RGB",
    "RGBA": "RGB with alpha (RGBA)",
    "CMYK": "CMYK",
    "YCbCr": "YCbCr",
    "I": "32-bit integer grayscale",
    "I;16": "16-bit grayscale",
    "F": "floating-point grayscale",
}


def load_image_folder(path: Path, schema: Schema) -> Table:
    """Every image of a folder of class sub-folders, checked against ``schema``."""
    files, problems = _listing(path, schema)
    if not files and not problems:
        raise DataError(
            f"{path} holds no images: put each class's PNG or JPEG files in a sub-folder "
            f"named after the class ({', '.join(map(str, schema.classes))})"
        )
    assert schema.image_shape is not None
    X = np.zeros((len(files), int(np.prod(schema.image_shape))), dtype=np.float32)
    y = np.zeros(len(files), dtype=np.int64)
    for row, (file, label) in enumerate(files):
        pixels = read_image(file, schema.image_shape)
        if isinstance(pixels, str):
            problems.append(f"{file}: {pixels}")
            continue
        X[row] = pixels.reshape(-1).astype(np.float32) / 255.0
        y[row] = label
    if problems:
        raise _data_error(path, problems)
    return Table(X, y, schema, str(path))


def _listing(path: Path, schema: Schema) -> tuple[list[tuple[Path, int]], list[str]]:
    """(image file, class index) of every image in the class folders, in name order, and
    what is wrong with the folder's layout."""
    index = schema.class_index()
    files: list[tuple[Path, int]] = []
    problems: list[str] = []
    for entry in sorted(path.iterdir()):
        if entry.name.startswith("."):  # .DS_Store and the like
            continue
        if not entry.is_dir():
            if entry.suffix.lower() in IMAGE_SUFFIXES:
                problems.append(
                    f"{entry}: an image outside the class folders; move it into the folder "
                    "of its class"
                )
            continue
        if entry.name not in index:
            problems.append(
                f"{entry}: folder {entry.name!r} is not one of the schema's classes "
                f"({', '.join(index)}); rename it or add the class to the schema"
            )
            continue
        inside = sorted(p for p in entry.iterdir() if not p.name.startswith("."))
        if not inside:
            problems.append(f"{entry}: empty class folder; add its images or remove it")
        for file in inside:
            if file.is_dir():
                problems.append(
                    f"{file}: a folder inside a class folder is not read; move its images "
                    "up into the class folder"
                )
            elif file.suffix.lower() not in IMAGE_SUFFIXES:
                problems.append(f"{file}: not a PNG or JPEG file (.png, .jpg, .jpeg); remove it")
            else:
                files.append((file, index[entry.name]))
    return files, problems


def read_image(file: Path, shape: tuple[int, int, int]) -> np.ndarray | str:
    """One image's uint8 pixels as (channels, height, width), or what is wrong with it.

    The size and mode come from the file's header and are checked before the pixels
    are decoded, so an oversized file costs nothing."""
    from PIL import Image

    channels, height, width = shape
    try:
        with Image.open(file) as img:
            if img.format not in FORMATS:
                return f"is a {img.format} image, not PNG or JPEG; save it as PNG or JPEG"
            if img.size != (width, height):
                return (
                    f"is {img.width} x {img.height} pixels (width x height); the schema's "
                    f"images are {width} x {height}: resize it"
                )
            if img.mode not in MODES[channels] or "transparency" in img.info:
                found = MODE_NAMES.get(img.mode, img.mode)
                if "transparency" in img.info:
                    found += " with transparency"
                return (
                    f"is {found}; the schema's images have {channels} channel(s) "
                    f"({IMAGE_CHANNELS[channels]}): convert it"
                )
            pixels = np.asarray(img.convert("L" if channels == 1 else "RGB"), dtype=np.uint8)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        return (
            f"cannot be read as an image ({type(exc).__name__}: {str(exc)[:80]}); the file "
            "is damaged or not an image"
        )
    return pixels[None] if channels == 1 else pixels.transpose(2, 0, 1)


def load_image_npz(path: Path, schema: Schema) -> Table:
    """An NPZ holding ``X`` (N, C, H, W) pixels and ``y`` (N,) labels. ``uint8`` pixels
    are scaled by 1/255; floats must already be in [0, 1]."""
    arrays = read_npz(path, "numpy.savez(path, X=images, y=labels)")
    if "X" not in arrays or "y" not in arrays:
        raise DataError(
            f"{path} needs arrays X (images, N x C x H x W) and y (labels); found "
            f"{', '.join(sorted(arrays)) or 'none'}"
        )
    X, labels = arrays["X"], arrays["y"]
    assert schema.image_shape is not None
    want = schema.image_shape
    if X.ndim != 4 or tuple(X.shape[1:]) != want:
        raise DataError(
            f"{path}: X has shape {tuple(X.shape)}; the schema's images need "
            f"(N, {want[0]}, {want[1]}, {want[2]}) (images, channels, height, width)"
        )
    if labels.ndim != 1 or len(labels) != len(X):
        raise DataError(f"{path}: y has shape {labels.shape}; it needs one label per image")
    if len(X) == 0:
        raise DataError(f"{path} holds no images")
    problems: list[str] = []
    pixels = _scaled(X, problems)
    y = _encode_label(schema, labels, list(range(len(X))), "image", problems)
    if problems:
        raise _data_error(path, problems)
    return Table(pixels.reshape(len(X), -1), y, schema, str(path))


def _scaled(X: np.ndarray, problems: list[str]) -> np.ndarray:
    """Pixels in [0, 1] as float32; each image whose values cannot be is a problem."""
    if X.dtype == np.uint8:
        return X.astype(np.float32) / 255.0
    if X.dtype.kind not in "fiu":
        problems.append(f"X holds {X.dtype} values; store uint8 pixels or floats in [0, 1]")
        return np.zeros(X.shape, dtype=np.float32)
    flat = X.reshape(len(X), -1).astype(np.float64)
    if X.dtype.kind in "iu":
        bad = (flat < 0).any(1) | (flat > 255).any(1)
        for i in np.flatnonzero(bad):
            problems.append(f"image {i}: integer pixels outside 0..255; store uint8 pixels")
        return (flat / 255.0).astype(np.float32).reshape(X.shape)
    finite = np.isfinite(flat).all(1)
    for i in np.flatnonzero(~finite):
        problems.append(f"image {i}: NaN or infinite pixel values; images have no missing values")
    with np.errstate(invalid="ignore"):
        outside = finite & ((flat < 0).any(1) | (flat > 1).any(1))
    for i in np.flatnonzero(outside):
        problems.append(
            f"image {i}: values outside [0, 1] (from {flat[i].min():g} to {flat[i].max():g}); "
            "store uint8 pixels or floats scaled to [0, 1]"
        )
    return flat.astype(np.float32).reshape(X.shape)
