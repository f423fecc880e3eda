"""Fuzzing the silo's data readers: CSV and NPZ tables against a schema, schema files.

A silo's files come from outside fedsilo. Whatever they hold, loading either succeeds
with a consistent table or raises ``DataError`` (whose message names the file); no other
exception may escape, because the ClientApp turns only that one into a clear message.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core_training.data import load_table
from core_training.schema import DataError, Feature, Schema

FUZZ = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
SCHEMA = Schema(
    "label",
    ("no", "yes"),
    (Feature("age"), Feature("smoker", ("no", "yes", "none")), Feature("bmi")),
)
COLUMNS = ["age", "smoker", "bmi", "label"]

# Cells that are plausible, borderline, and plain wrong, to reach every branch.
CELLS = st.one_of(
    st.sampled_from(
        [
            "",
            "NA",
            "n/a",
            "nan",
            "NaN",
            "none",
            "?",
            "null",
            "no",
            "yes",
            "1",
            "0",
            "1.0",
            "-0.0",
            "1e400",
            "-inf",
            "inf",
            "infinity",
            "1_000",
            "0x10",
            " 7 ",
            '"',
            "'",
            ",",
            ";",
            "\t",
            "\n",
            "\r",
            "\ufeff",
            "\x00",
            "é",
            "1,5",
            "True",
        ]
    ),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.integers(-(10**30), 10**30).map(str),
    st.text(max_size=12),
)


def _check(table, path: Path) -> None:
    assert table.X.shape == (len(table), SCHEMA.num_features)
    assert table.X.dtype == np.float64 and table.y.dtype == np.int64
    assert ((table.y >= 0) & (table.y < SCHEMA.num_classes)).all()
    assert not np.isinf(table.X).any()
    assert str(path) in table.source


def _load(path: Path) -> None:
    try:
        table = load_table(path, SCHEMA)
    except DataError as exc:
        assert str(path) in str(exc)
    else:
        _check(table, path)


@FUZZ
@given(
    header=st.permutations(COLUMNS) | st.lists(st.sampled_from([*COLUMNS, "x", ""]), max_size=6),
    rows=st.lists(st.lists(CELLS, min_size=0, max_size=6), max_size=12),
    delimiter=st.sampled_from([",", ";", "\t"]),
)
def test_random_csv_rows_load_or_raise_data_error(tmp_path, header, rows, delimiter):
    out = io.StringIO()
    writer = csv.writer(out, delimiter=delimiter)
    writer.writerow(header)
    writer.writerows(rows)
    path = tmp_path / "silo.csv"
    path.write_text(out.getvalue(), encoding="utf-8")
    _load(path)


@FUZZ
@given(text=st.text(max_size=400))
def test_random_text_as_csv_loads_or_raises_data_error(tmp_path, text):
    path = tmp_path / "silo.csv"
    path.write_text(text, encoding="utf-8")
    _load(path)


@FUZZ
@given(blob=st.binary(max_size=600))
def test_random_bytes_as_csv_or_npz_raise_data_error(tmp_path, blob):
    # Random bytes never carry the schema's header (or a zip archive of its columns).
    for name in ("silo.csv", "silo.npz"):
        path = tmp_path / name
        path.write_bytes(blob)
        with pytest.raises(DataError) as caught:
            load_table(path, SCHEMA)
        assert str(path) in str(caught.value)


@FUZZ
@given(data=st.data())
def test_a_damaged_csv_loads_or_raises_data_error(tmp_path, data):
    good = "age,smoker,bmi,label\n34,no,22.5,no\n51,yes,,yes\n,none,30.1,no\n"
    blob = bytearray(good.encode())
    for _ in range(data.draw(st.integers(1, 4), label="flips")):
        at = data.draw(st.integers(0, len(blob) - 1), label="at")
        blob[at] ^= 1 << data.draw(st.integers(0, 7), label="bit")
    cut = data.draw(st.integers(0, len(blob)), label="cut")
    path = tmp_path / "silo.csv"
    path.write_bytes(bytes(blob[:cut]))
    _load(path)


ARRAYS = st.one_of(
    st.lists(st.floats(allow_nan=True, allow_infinity=True), max_size=5).map(np.array),
    st.lists(st.integers(-5, 5), max_size=5).map(np.array),
    st.lists(st.sampled_from(["no", "yes", "none", "", "maybe"]), max_size=5).map(np.array),
    st.just(np.zeros((2, 2))),
    st.just(np.array(3.0)),
)


@FUZZ
@given(columns=st.dictionaries(st.sampled_from([*COLUMNS, "other"]), ARRAYS, max_size=5))
def test_random_npz_columns_load_or_raise_data_error(tmp_path, columns):
    path = tmp_path / "silo.npz"
    np.savez(path, **columns)
    _load(path)


TOML_VALUES = st.recursive(
    st.one_of(
        st.booleans(),
        st.integers(-5, 5),
        st.floats(allow_nan=False, allow_infinity=False),
        st.text(max_size=5),
        st.just("numeric"),
    ),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner),
    max_leaves=8,
)


def _toml(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.encode("unicode_escape").decode().replace('"', '\\"') + '"'
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_toml(k)} = {_toml(v)}" for k, v in value.items()) + "}"
    return repr(value)


@FUZZ
@given(
    label=st.dictionaries(st.sampled_from(["column", "classes", "x"]), TOML_VALUES, max_size=3),
    features=st.dictionaries(st.text(max_size=4), TOML_VALUES, max_size=4),
    image_shape=st.none() | TOML_VALUES,
)
def test_random_schema_files_load_or_raise_data_error(tmp_path, label, features, image_shape):
    lines = [] if image_shape is None else [f"image_shape = {_toml(image_shape)}"]
    lines += ["[label]", *(f"{_toml(k)} = {_toml(v)}" for k, v in label.items())]
    lines += ["[features]", *(f"{_toml(k)} = {_toml(v)}" for k, v in features.items())]
    path = tmp_path / "schema.toml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    try:
        schema = Schema.load(path)
    except DataError:
        return
    assert Schema.from_dict(_reparse(schema.to_toml())) == schema  # it round-trips


@FUZZ
@given(blob=st.binary(max_size=300))
def test_random_bytes_as_schema_raise_data_error(tmp_path, blob):
    # Random bytes never hold a [label] table with a column and classes and [features].
    path = tmp_path / "schema.toml"
    path.write_bytes(blob)
    with pytest.raises(DataError) as caught:
        Schema.load(path)
    assert str(path) in str(caught.value)


def _reparse(text: str) -> dict:
    import tomllib

    return tomllib.loads(text)


@pytest.mark.parametrize("content", ["", "\ufeff", "\ufeff\n", "\n\n", " , \n"])
def test_files_without_a_header_raise_data_error(tmp_path, content):
    path = tmp_path / "silo.csv"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(DataError):
        load_table(path, SCHEMA)
