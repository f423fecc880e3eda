"""Load a silo's table (CSV, NPZ, image files or a built-in set) into arrays checked
against a schema (images: :mod:`.images`).

Every problem in a file is collected and reported together in one :class:`DataError`
that names the file, the line or column, and what to do, so a data owner can fix a file
in one pass. Missing values are kept as NaN for the cleaning step to impute.
"""

from __future__ import annotations

import csv
import gzip
import importlib.util
import io
import math
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .schema import DataError, Feature, Schema

BUILTIN_DATASETS = ("digits", "breast-cancer", "wine", "synthetic")
MISSING_TOKENS = frozenset({"", "na", "n/a", "nan", "null", "none", "?"})
MAX_LISTED_PROBLEMS = 20


@dataclass
class Table:
    """Encoded features, class indices and their schema.

    Features are float64 with NaN where missing. They stay float64 until standardized:
    float32 spaces values near 1.7e12 (millisecond timestamps) 131,072 apart, which
    would erase a column's whole spread before cleaning ever sees it. Image tables
    (:mod:`.images`) are the exception: pixel values in [0, 1], float32, never missing.
    """

    X: np.ndarray
    y: np.ndarray
    schema: Schema
    source: str
    warnings: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.y)

    @property
    def feature_names(self) -> list[str]:
        return self.schema.feature_names

    def subset(self, index: np.ndarray) -> Table:
        return Table(self.X[index], self.y[index], self.schema, self.source, list(self.warnings))


def load_table(
    source: str | Path,
    schema: Schema | str | Path | None = None,
    **synthetic: Any,
) -> Table:
    """Load a built-in set by name, or a CSV/NPZ file checked against ``schema`` (with an
    image schema: a folder of class sub-folders or an NPZ of images).

    ``synthetic`` holds the parameters of the ``synthetic`` set (see :func:`synthetic`).
    """
    if isinstance(source, str) and source in BUILTIN_DATASETS:
        return load_builtin(source, **synthetic)
    path = Path(source)
    if schema is None:
        raise DataError(
            f"{path}: a data file needs a schema; pass a schema TOML file "
            f"(or use a built-in set: {', '.join(BUILTIN_DATASETS)})"
        )
    if not isinstance(schema, Schema):
        schema = Schema.load(schema)
    if not path.exists():
        raise DataError(
            f"data file {path} does not exist; check the path "
            f"(or use a built-in set: {', '.join(BUILTIN_DATASETS)})"
        )
    if schema.is_image:
        return _load_images(path, schema)
    if path.is_dir():
        raise DataError(f"{path} is a folder; pass the CSV or NPZ file inside it")
    if path.suffix.lower() == ".npz":
        return _load_npz(path, schema)
    return _load_csv(path, schema)


def _load_images(path: Path, schema: Schema) -> Table:
    """An image schema's data: a folder of class sub-folders or an NPZ of pixels."""
    from .images import load_image_folder, load_image_npz  # Pillow only where images are

    if path.is_dir():
        return load_image_folder(path, schema)
    if path.suffix.lower() == ".npz":
        return load_image_npz(path, schema)
    raise DataError(
        f"{path}: an image schema reads a folder of class sub-folders (PNG or JPEG files) "
        "or an NPZ file holding X (images, N x C x H x W) and y (labels)"
    )


# -- CSV -------------------------------------------------------------------------------


def _load_csv(path: Path, schema: Schema) -> Table:
    raw = path.read_bytes()
    if not raw.strip():
        raise DataError(f"{path} is empty; it needs a header line and at least one data row")
    if b"\x00" in raw[:65536] or raw[:4] == b"PK\x03\x04":
        raise DataError(f"{path} is not a CSV text file (it holds binary data); export it as CSV")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise DataError(f"{path} is not UTF-8 text; save it as a UTF-8 CSV file") from None
    if not text.strip():  # e.g. nothing but a byte-order mark
        raise DataError(f"{path} is empty; it needs a header line and at least one data row")
    delimiter = _sniff_delimiter(text)
    reader = csv.reader(io.StringIO(text), delimiter=delimiter)
    try:
        rows = list(reader)
    except csv.Error as exc:
        raise DataError(f"{path} is not a readable CSV file: {exc}") from None
    header = [h.strip() for h in rows[0]]
    body = [r for r in rows[1:] if any(cell.strip() for cell in r)]
    if not body:
        raise DataError(f"{path} has a header but no data rows")
    _check_columns(path, header, schema)
    problems: list[str] = []
    width = len(header)
    for line, row in enumerate(rows[1:], start=2):
        if any(c.strip() for c in row) and len(row) != width:
            problems.append(f"line {line} has {len(row)} fields but the header has {width}")
    if problems:
        raise _data_error(path, problems)
    lines = [i for i, r in enumerate(rows[1:], start=2) if any(c.strip() for c in r)]
    columns = {name: [r[i] for r in body] for i, name in enumerate(header)}
    return _encode(path, schema, columns, lines)


def _sniff_delimiter(text: str) -> str:
    first = text.split("\n", 1)[0]
    counts = {d: first.count(d) for d in (",", ";", "\t")}
    best = max(counts, key=lambda d: counts[d])
    return best if counts[best] > 0 else ","


def _check_columns(path: Path, header: list[str], schema: Schema) -> None:
    wanted = [schema.label] + [f.name for f in schema.features]
    missing = [c for c in wanted if c not in header]
    if missing:
        role = {schema.label: "label"} | {f.name: "feature" for f in schema.features}
        listed = ", ".join(f"{role[c]} column {c!r}" for c in missing)
        found = ", ".join(repr(h) for h in header[:12]) + (" ..." if len(header) > 12 else "")
        if len(header) == 1 and len(missing) > 1:
            raise DataError(
                f"{path} does not look like a CSV file with a header line "
                f"(found one column {header[0][:40]!r}); save it as comma-separated CSV"
            )
        raise DataError(
            f"{path} lacks {listed}; columns found: {found}. Rename the columns or fix the schema"
        )
    dupes = {h for h in header if header.count(h) > 1 and h in wanted}
    if dupes:
        raise DataError(f"{path}: column(s) {sorted(dupes)} appear more than once in the header")


# -- NPZ -------------------------------------------------------------------------------


def read_npz(path: Path, how_to_save: str) -> dict[str, np.ndarray]:
    """Every array of an NPZ file (no pickles), or a DataError saying how to save one."""
    try:
        with np.load(path, allow_pickle=False) as npz:
            return {k: npz[k] for k in npz.files}
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as exc:
        raise DataError(
            f"{path} is not a readable NPZ file ({type(exc).__name__}); save it with {how_to_save}"
        ) from None


def _load_npz(path: Path, schema: Schema) -> Table:
    arrays = read_npz(path, "numpy.savez(path, column=array, ...) holding one array per column")
    if not arrays:
        raise DataError(f"{path} is empty; it needs one array per column")
    _check_columns(path, list(arrays), schema)
    wanted = [schema.label] + [f.name for f in schema.features]
    lengths = {name: arrays[name].shape for name in wanted}
    bad = [n for n, s in lengths.items() if len(s) != 1]
    if bad:
        raise DataError(f"{path}: column array(s) {bad} must be one-dimensional")
    if len({s[0] for s in lengths.values()}) != 1:
        raise DataError(f"{path}: column arrays differ in length: {lengths}")
    n = lengths[schema.label][0]
    if n == 0:
        raise DataError(f"{path} holds no rows")
    return _encode(path, schema, {k: arrays[k] for k in wanted}, list(range(n)), row_word="row")


# -- encoding (shared by CSV and NPZ) -------------------------------------------------


def _encode(
    path: Path,
    schema: Schema,
    columns: dict[str, Any],
    lines: list[int],
    row_word: str = "line",
) -> Table:
    problems: list[str] = []
    blocks = [
        _encode_feature(f, columns[f.name], lines, row_word, problems) for f in schema.features
    ]
    y = _encode_label(schema, columns[schema.label], lines, row_word, problems)
    if problems:
        raise _data_error(path, problems)
    X = np.concatenate(blocks, axis=1).astype(np.float64)
    return Table(X, y, schema, str(path))


def _encode_feature(
    feat: Feature, values: Any, lines: list[int], row_word: str, problems: list[str]
) -> np.ndarray:
    n = len(lines)
    if feat.is_numeric:
        arr = np.asarray(values)
        if arr.dtype.kind in "biuf":
            out = arr.astype(np.float64)
        else:
            out = np.empty(n, dtype=np.float64)
            for i, cell in enumerate(values):
                text = str(cell).strip()
                if text.lower() in MISSING_TOKENS:
                    out[i] = np.nan
                    continue
                try:
                    out[i] = float(text)
                except ValueError:
                    out[i] = np.nan
                    problems.append(
                        f"{row_word} {lines[i]}, column {feat.name!r}: {text[:40]!r} is not a "
                        "number; fix the value or leave the cell empty to mark it missing"
                    )
        for i in np.flatnonzero(np.isinf(out)):
            problems.append(
                f"{row_word} {lines[i]}, column {feat.name!r}: infinite value; replace it "
                "with a finite number or leave the cell empty"
            )
        return out.reshape(n, 1)
    cats = feat.categories or ()
    index = {c: j for j, c in enumerate(cats)}
    out = np.zeros((n, len(cats)), dtype=np.float64)
    for i, cell in enumerate(values):
        text = str(cell).strip()
        if text in index:  # before the missing tokens: a category may be named "none"
            out[i, index[text]] = 1.0
        elif text.lower() in MISSING_TOKENS:
            out[i, :] = np.nan
        else:
            problems.append(
                f"{row_word} {lines[i]}, column {feat.name!r}: category {text[:40]!r} is not in "
                f"the schema ({', '.join(cats)}); fix the value or add the category to the schema"
            )
    return out


def _encode_label(
    schema: Schema, values: Any, lines: list[int], row_word: str, problems: list[str]
) -> np.ndarray:
    index = schema.class_index()
    y = np.zeros(len(lines), dtype=np.int64)
    for i, cell in enumerate(values):
        # The text as written first: a class may be named "none" or "01".
        text = str(cell).strip()
        if text not in index:
            text = _canonical_label(cell)
        if text in index:
            y[i] = index[text]
        elif text.lower() in MISSING_TOKENS:
            problems.append(
                f"{row_word} {lines[i]}, label column {schema.label!r}: the label is missing; "
                "every training row needs a label (remove the row or fill it in)"
            )
        else:
            problems.append(
                f"{row_word} {lines[i]}, label column {schema.label!r}: {text[:40]!r} is not one "
                f"of the schema's classes ({', '.join(index)}); fix the label or the schema"
            )
    return y


def _canonical_label(cell: Any) -> str:
    """'1', '1.0' and 1 all name class 1; text labels stay as they are."""
    text = str(cell).strip()
    try:
        number = float(text)
    except ValueError:
        return text
    if math.isfinite(number) and number.is_integer():
        return str(int(number))
    return text


def _data_error(path: Path, problems: list[str]) -> DataError:
    shown = problems[:MAX_LISTED_PROBLEMS]
    more = len(problems) - len(shown)
    tail = f"\n  ... and {more} more" if more else ""
    err = DataError(f"{path}: {len(problems)} problem(s):\n  " + "\n  ".join(shown) + tail)
    err.problems = problems  # type: ignore[attr-defined]
    return err


# -- writing ---------------------------------------------------------------------------


def write_csv(table: Table, path: str | Path) -> Path:
    """Write a table back to CSV in schema columns (categoricals decoded), e.g. to make
    silo files from a built-in set. Written to a temporary name, then renamed."""
    path = Path(path)
    schema = table.schema
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow([f.name for f in schema.features] + [schema.label])
        col = 0
        decoded: list[list[str]] = []
        for feat in schema.features:
            if feat.is_numeric:
                decoded.append(["" if np.isnan(v) else repr(float(v)) for v in table.X[:, col]])
                col += 1
            else:
                k = len(feat.categories or ())
                block = table.X[:, col : col + k]
                decoded.append(
                    [
                        "" if np.isnan(r).any() else (feat.categories or ())[int(r.argmax())]
                        for r in block
                    ]
                )
                col += k
        labels = [str(schema.classes[int(c)]) for c in table.y]
        writer.writerows(zip(*decoded, labels, strict=True))
    tmp.replace(path)
    return path


# -- built-in sets ---------------------------------------------------------------------


# The feature names scikit-learn's loaders give these sets (its files hold numbers only).
_BREAST_CANCER_MEASURES = (
    "radius",
    "texture",
    "perimeter",
    "area",
    "smoothness",
    "compactness",
    "concavity",
    "concave points",
    "symmetry",
    "fractal dimension",
)
BREAST_CANCER_FEATURES = (
    *(f"mean {m}" for m in _BREAST_CANCER_MEASURES),
    *(f"{m} error" for m in _BREAST_CANCER_MEASURES),
    *(f"worst {m}" for m in _BREAST_CANCER_MEASURES),
)
WINE_FEATURES = (
    "alcohol",
    "malic_acid",
    "ash",
    "alcalinity_of_ash",
    "magnesium",
    "total_phenols",
    "flavanoids",
    "nonflavanoid_phenols",
    "proanthocyanins",
    "color_intensity",
    "hue",
    "od280/od315_of_diluted_wines",
    "proline",
)


def load_builtin(name: str, **params: Any) -> Table:
    """A data set shipped with scikit-learn, or a synthetic one; offline, deterministic.

    The shipped sets are read straight from scikit-learn's data files, without importing
    scikit-learn: that import costs over a second of CPU, paid by every process that
    loads a built-in set (each ClientApp, and in a deployment each message's)."""
    if name == "synthetic":
        return synthetic(**params)
    if params:
        raise DataError(f"built-in set {name!r} takes no parameters, got {sorted(params)}")
    shape: tuple[int, int, int] | None = None
    if name == "digits":
        with gzip.open(_sklearn_data_file("digits.csv.gz"), "rt") as f:
            raw = np.loadtxt(f, delimiter=",")
        X, y = raw[:, :-1], raw[:, -1]
        names: tuple[str, ...] = tuple(f"pixel_{i // 8}_{i % 8}" for i in range(64))
        shape = (1, 8, 8)
    elif name == "breast-cancer":
        X, y = _sklearn_csv("breast_cancer.csv", len(BREAST_CANCER_FEATURES))
        names = BREAST_CANCER_FEATURES
    elif name == "wine":
        X, y = _sklearn_csv("wine_data.csv", len(WINE_FEATURES))
        names = WINE_FEATURES
    else:
        raise DataError(
            f"unknown built-in data set {name!r}; choose one of {', '.join(BUILTIN_DATASETS)}"
        )
    target = y.astype(np.int64)
    classes = tuple(int(c) for c in np.unique(target))
    schema = Schema("target", classes, tuple(Feature(n) for n in names), shape)
    return Table(X.astype(np.float64), target, schema, name)


def _sklearn_data_file(filename: str) -> Path:
    """A file of scikit-learn's ``datasets/data`` folder, found without importing it."""
    spec = importlib.util.find_spec("sklearn")
    if spec is None or not spec.submodule_search_locations:
        raise DataError("the built-in data sets come with scikit-learn; pip install scikit-learn")
    path = Path(next(iter(spec.submodule_search_locations))) / "datasets" / "data" / filename
    if not path.is_file():
        raise DataError(f"scikit-learn's data file {path} is missing; reinstall scikit-learn")
    return path


def _sklearn_csv(filename: str, features: int) -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's CSV layout: a first line ``rows,features,class names...``, then
    one line per row, its features and then its class index."""
    path = _sklearn_data_file(filename)
    with path.open(encoding="utf-8") as f:
        rows, width = (int(v) for v in f.readline().split(",")[:2])
        raw = np.loadtxt(f, delimiter=",", ndmin=2)
    if raw.shape != (rows, features + 1) or width != features:
        raise DataError(f"{path} holds {raw.shape}, expected {rows} rows of {features} features")
    return raw[:, :-1], raw[:, -1]


def synthetic(
    rows: int = 2000,
    features: int = 20,
    classes: int = 2,
    minority_fraction: float | None = None,
    seed: int = 0,
) -> Table:
    """scikit-learn's ``make_classification``. With ``minority_fraction`` the last class
    gets that share of the rows and the others split the rest evenly (class imbalance)."""
    from sklearn.datasets import make_classification

    if rows < 2 * classes or features < 2 or classes < 2:
        raise DataError("synthetic data needs rows >= 2 * classes, features >= 2, classes >= 2")
    weights = None
    if minority_fraction is not None:
        if not 0 < minority_fraction < 1:
            raise DataError(f"minority_fraction must be in (0, 1), got {minority_fraction}")
        rest = (1 - minority_fraction) / (classes - 1)
        weights = [rest] * (classes - 1) + [minority_fraction]
    informative = max(2, min(features, features // 2 + 1))
    X, y = make_classification(
        n_samples=rows,
        n_features=features,
        n_informative=informative,
        n_redundant=min(features - informative, features // 4),
        n_classes=classes,
        n_clusters_per_class=2 if classes * 2 <= 2**informative else 1,
        weights=weights,
        flip_y=0.01,
        class_sep=1.0,
        random_state=seed,
    )
    schema = Schema(
        "target", tuple(range(classes)), tuple(Feature(f"x{i}") for i in range(features))
    )
    return Table(X.astype(np.float64), y.astype(np.int64), schema, "synthetic")
