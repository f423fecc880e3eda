"""Every bad input gives a DataError whose message names the file, line or column."""

from __future__ import annotations

import io
import re
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from core_training.data import load_table
from core_training.schema import DataError, Schema

WriteFile = Callable[[str, "str | bytes"], Path]
HEADER = "age,smoker,income,target\n"


def _error(data: Path, schema: Path | Schema) -> str:
    with pytest.raises(DataError) as info:
        load_table(data, schema)
    return str(info.value)


# -- whole-file problems ---------------------------------------------------------------


def test_missing_file_names_the_file(tmp_path: Path, mixed_schema: Path) -> None:
    message = _error(tmp_path / "nowhere.csv", mixed_schema)
    assert "nowhere.csv" in message
    assert "does not exist" in message


def test_data_file_without_schema_is_refused(write_file: WriteFile) -> None:
    data = write_file("d.csv", HEADER + "1,no,2,0\n")
    with pytest.raises(DataError, match="needs a schema"):
        load_table(data)


def test_folder_instead_of_file_is_refused(tmp_path: Path, mixed_schema: Path) -> None:
    assert "is a folder" in _error(tmp_path, mixed_schema)


@pytest.mark.parametrize(
    ("content", "says"),
    [
        ("", "is empty"),
        ("\n  \n", "is empty"),
        (HEADER, "no data rows"),
        (HEADER + "\n\n", "no data rows"),
    ],
)
def test_empty_or_header_only_file_names_the_file(
    write_file: WriteFile, mixed_schema: Path, content: str, says: str
) -> None:
    message = _error(write_file("silo.csv", content), mixed_schema)
    assert "silo.csv" in message
    assert says in message


def _zip_bytes() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("data.csv", HEADER + "1,no,2,0\n")
    return buffer.getvalue()


@pytest.mark.parametrize(
    "content",
    [
        pytest.param(np.random.default_rng(0).bytes(4096), id="random-bytes"),
        pytest.param(_zip_bytes(), id="zip"),
        pytest.param(b"\x89PNG\r\n\x1a\n" + bytes(range(256)), id="png"),
        pytest.param("age,target\n1,0\n".encode("utf-16"), id="utf-16"),
    ],
)
def test_binary_file_is_not_taken_for_csv(
    write_file: WriteFile, mixed_schema: Path, content: bytes
) -> None:
    message = _error(write_file("silo.csv", content), mixed_schema)
    assert "silo.csv" in message
    assert "CSV" in message or "UTF-8" in message


def test_short_non_utf8_bytes_say_so(write_file: WriteFile, mixed_schema: Path) -> None:
    message = _error(write_file("silo.csv", b"age,target\n\xff\xfe1,0\n"), mixed_schema)
    assert "silo.csv is not UTF-8" in message


# -- columns ---------------------------------------------------------------------------


def test_missing_label_column_is_named(write_file: WriteFile, mixed_schema: Path) -> None:
    message = _error(write_file("d.csv", "age,smoker,income\n1,no,2\n"), mixed_schema)
    assert "label column 'target'" in message
    assert "d.csv" in message


def test_missing_feature_column_is_named(write_file: WriteFile, mixed_schema: Path) -> None:
    message = _error(write_file("d.csv", "age,smoker,target\n1,no,0\n"), mixed_schema)
    assert "feature column 'income'" in message
    assert "'age'" in message  # the columns it did find are listed too


def test_duplicate_header_column_is_named(write_file: WriteFile, mixed_schema: Path) -> None:
    message = _error(
        write_file("d.csv", "age,age,smoker,income,target\n1,2,no,3,0\n"), mixed_schema
    )
    assert "'age'" in message
    assert "more than once" in message


# -- cells -----------------------------------------------------------------------------


def test_text_in_numeric_column_names_line_and_column(
    write_file: WriteFile, mixed_schema: Path
) -> None:
    message = _error(write_file("d.csv", HEADER + "1,no,2,0\n3,yes,lots,1\n"), mixed_schema)
    assert "d.csv" in message
    assert "line 3, column 'income'" in message
    assert "'lots' is not a number" in message


def test_category_not_in_schema_is_named(write_file: WriteFile, mixed_schema: Path) -> None:
    message = _error(write_file("d.csv", HEADER + "1,sometimes,2,0\n"), mixed_schema)
    assert "line 2, column 'smoker'" in message
    assert "'sometimes'" in message


def test_label_not_in_schema_is_named(write_file: WriteFile, mixed_schema: Path) -> None:
    message = _error(write_file("d.csv", HEADER + "1,no,2,0\n1,no,2,7\n"), mixed_schema)
    assert "line 3, label column 'target'" in message
    assert "'7'" in message


@pytest.mark.parametrize("cell", ["", "NA", "?"])
def test_missing_label_in_a_row_is_refused(
    write_file: WriteFile, mixed_schema: Path, cell: str
) -> None:
    message = _error(write_file("d.csv", HEADER + f"1,no,2,{cell}\n1,no,2,1\n"), mixed_schema)
    assert "line 2, label column 'target'" in message
    assert "label is missing" in message


@pytest.mark.parametrize("cell", ["inf", "-inf", "Infinity", "1e400"])
def test_infinite_value_is_refused(write_file: WriteFile, mixed_schema: Path, cell: str) -> None:
    message = _error(write_file("d.csv", HEADER + f"{cell},no,2,0\n"), mixed_schema)
    assert "line 2, column 'age'" in message
    assert "infinite" in message


def test_row_with_wrong_field_count_is_named(write_file: WriteFile, mixed_schema: Path) -> None:
    message = _error(write_file("d.csv", HEADER + "1,no,2,0\n1,no,0\n1,no,2,0,9\n"), mixed_schema)
    assert "line 3 has 3 fields but the header has 4" in message
    assert "line 4 has 5 fields but the header has 4" in message


def test_every_problem_in_a_file_is_listed(write_file: WriteFile, mixed_schema: Path) -> None:
    data = write_file(
        "d.csv",
        HEADER + "x,no,2,0\n1,maybe,2,1\n1,no,inf,1\n1,no,2,\n1,no,2,5\n",
    )
    with pytest.raises(DataError) as info:
        load_table(data, mixed_schema)
    problems = info.value.problems  # type: ignore[attr-defined]
    assert len(problems) == 5
    message = str(info.value)
    assert "5 problem(s)" in message
    for where in (
        "line 2, column 'age'",
        "line 3, column 'smoker'",
        "line 4, column 'income'",
        "line 5, label column 'target'",
        "line 6, label column 'target'",
    ):
        assert where in message


def test_long_problem_lists_are_cut_with_a_count(write_file: WriteFile, mixed_schema: Path) -> None:
    data = write_file("d.csv", HEADER + "x,no,2,0\n" * 25)
    message = _error(data, mixed_schema)
    assert "25 problem(s)" in message
    assert "... and 5 more" in message
    assert len(re.findall(r"is not a number", message)) == 20


# -- NPZ -------------------------------------------------------------------------------


def _bad_npz(path: Path, kind: str) -> None:
    if kind == "random-bytes":
        path.write_bytes(np.random.default_rng(1).bytes(512))
    elif kind == "text":
        path.write_text("age,target\n1,0\n", encoding="utf-8")
    elif kind == "truncated":
        np.savez(path, age=np.arange(100.0), target=np.zeros(100, int))
        path.write_bytes(path.read_bytes()[:200])
    elif kind == "pickled":
        np.savez(path, age=np.array([{"a": 1}], dtype=object), target=np.array([0]))


@pytest.mark.parametrize("kind", ["random-bytes", "text", "truncated", "pickled"])
def test_unreadable_npz_names_the_file(tmp_path: Path, load_schema: Schema, kind: str) -> None:
    path = tmp_path / "silo.npz"
    _bad_npz(path, kind)
    message = _error(path, load_schema)
    assert "silo.npz is not a readable NPZ file" in message


def test_npz_missing_a_column_names_it(tmp_path: Path, load_schema: Schema) -> None:
    np.savez(tmp_path / "d.npz", age=[1.0], smoker=["no"], target=[0])
    assert "feature column 'income'" in _error(tmp_path / "d.npz", load_schema)


def test_npz_columns_of_different_lengths_are_refused(tmp_path: Path, load_schema: Schema) -> None:
    np.savez(tmp_path / "d.npz", age=[1.0, 2.0], smoker=["no"], income=[1.0], target=[0])
    assert "differ in length" in _error(tmp_path / "d.npz", load_schema)


def test_npz_two_dimensional_column_is_named(tmp_path: Path, load_schema: Schema) -> None:
    np.savez(
        tmp_path / "d.npz", age=np.ones((2, 2)), smoker=["no"] * 2, income=[1, 2], target=[0, 1]
    )
    message = _error(tmp_path / "d.npz", load_schema)
    assert "'age'" in message
    assert "one-dimensional" in message


def test_npz_cell_problems_name_the_row(tmp_path: Path, load_schema: Schema) -> None:
    np.savez(
        tmp_path / "d.npz",
        age=[1.0, np.inf],
        smoker=["no", "sometimes"],
        income=[1.0, 2.0],
        target=[0, 3],
    )
    message = _error(tmp_path / "d.npz", load_schema)
    assert "row 1, column 'age': infinite" in message
    assert "row 1, column 'smoker'" in message
    assert "row 1, label column 'target'" in message


# -- schema files ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("toml", "says"),
    [
        pytest.param("[label\ncolumn = 'y'", "not valid TOML", id="invalid-toml"),
        pytest.param('[features]\nx = "numeric"\n', "[label]", id="missing-label"),
        pytest.param(
            '[label]\ncolumn = "y"\n\n[features]\nx = "numeric"\n', "classes", id="no-classes"
        ),
        pytest.param(
            '[label]\ncolumn = "y"\nclasses = [0, 1]\n', "[features]", id="missing-features"
        ),
        pytest.param(
            '[label]\ncolumn = "y"\nclasses = [0, 1]\n\n[features]\nx = "float"\n',
            "feature 'x'",
            id="bad-feature-type",
        ),
        pytest.param(
            '[label]\ncolumn = "y"\nclasses = [0, 1]\n\n[features]\nx = { categories = [] }\n',
            "feature 'x'",
            id="empty-categories",
        ),
        pytest.param(
            '[label]\ncolumn = "y"\nclasses = [0, 1.5]\n\n[features]\nx = "numeric"\n',
            "classes",
            id="float-class",
        ),
        pytest.param(
            'image_shape = [1, "a", 8]\n[label]\ncolumn = "y"\nclasses = [0, 1]\n\n'
            '[features]\nx = "numeric"\n',
            "image_shape",
            id="image-shape-not-numbers",
        ),
        pytest.param(
            'image_shape = [8, 8]\n[label]\ncolumn = "y"\nclasses = [0, 1]\n\n'
            '[features]\nx = "numeric"\n',
            "image_shape",
            id="image-shape-two-values",
        ),
    ],
)
def test_bad_schema_file_names_the_file(write_file: WriteFile, toml: str, says: str) -> None:
    path = write_file("schema.toml", toml)
    with pytest.raises(DataError) as info:
        Schema.load(path)
    assert "schema.toml" in str(info.value)
    assert says in str(info.value)


@pytest.mark.parametrize(
    ("raw", "says"),
    [
        ({"label": {"column": "y", "classes": [0]}, "features": {"x": "numeric"}}, "two classes"),
        ({"label": {"column": "y", "classes": [1, "1"]}, "features": {"x": "numeric"}}, "twice"),
        ({"label": {"column": "x", "classes": [0, 1]}, "features": {"x": "numeric"}}, "'x'"),
    ],
)
def test_inconsistent_schema_is_refused(raw: dict, says: str) -> None:
    with pytest.raises(DataError, match=re.escape(says)):
        Schema.from_dict(raw)


def test_missing_schema_file_is_named(tmp_path: Path, write_file: WriteFile) -> None:
    data = write_file("d.csv", HEADER + "1,no,2,0\n")
    with pytest.raises(DataError, match=r"nope\.toml does not exist"):
        load_table(data, tmp_path / "nope.toml")


def test_unknown_builtin_set_is_a_data_error() -> None:
    from core_training.data import load_builtin

    with pytest.raises(DataError, match="'mnist'"):
        load_builtin("mnist")
