"""Loading tables: schema files, CSV and NPZ round trips, encoding of each column kind."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from core_training.data import load_builtin, load_table, write_csv
from core_training.schema import Schema

WriteFile = Callable[[str, "str | bytes"], Path]


@pytest.mark.parametrize("name", ["wine", "breast-cancer", "digits"])
def test_csv_round_trip_of_builtin_set_gives_the_same_arrays(tmp_path: Path, name: str) -> None:
    table = load_builtin(name)
    data = write_csv(table, tmp_path / f"{name}.csv")
    schema = table.schema.save(tmp_path / f"{name}.toml")

    loaded = load_table(data, schema)

    assert loaded.X.dtype == np.float64
    np.testing.assert_array_equal(loaded.X, table.X)
    np.testing.assert_array_equal(loaded.y, table.y)
    assert loaded.feature_names == table.feature_names
    assert loaded.schema.classes == table.schema.classes


def test_schema_round_trips_through_toml(tmp_path: Path) -> None:
    schema = load_builtin("digits").schema
    loaded = Schema.load(schema.save(tmp_path / "s.toml"))
    assert loaded == schema
    assert loaded.image_shape == (1, 8, 8)
    assert Schema.from_dict(schema.to_dict()) == schema


def test_npz_round_trip_gives_the_same_arrays(tmp_path: Path) -> None:
    table = load_builtin("breast-cancer")
    columns = {name: table.X[:, j] for j, name in enumerate(table.feature_names)}
    np.savez(tmp_path / "bc.npz", target=table.y, **columns)

    loaded = load_table(tmp_path / "bc.npz", table.schema)

    np.testing.assert_array_equal(loaded.X, table.X)
    np.testing.assert_array_equal(loaded.y, table.y)


def test_categorical_feature_is_one_hot_in_schema_order(
    mixed_schema: Path, write_file: WriteFile
) -> None:
    data = write_file(
        "d.csv",
        "age,smoker,income,target\n30,former,10,0\n40,no,20,1\n50,yes,30,0\n",
    )
    table = load_table(data, mixed_schema)

    assert table.feature_names == [
        "age",
        "smoker=no",
        "smoker=yes",
        "smoker=former",
        "income",
    ]
    np.testing.assert_array_equal(
        table.X,
        [[30, 0, 0, 1, 10], [40, 1, 0, 0, 20], [50, 0, 1, 0, 30]],
    )
    np.testing.assert_array_equal(table.y, [0, 1, 0])
    assert table.schema.numeric_mask == [True, False, False, False, True]


def test_missing_cells_become_nan(mixed_schema: Path, write_file: WriteFile) -> None:
    data = write_file(
        "d.csv",
        "age,smoker,income,target\n,no,NA,0\n40,,n/a,1\n?,yes,null,0\n",
    )
    table = load_table(data, mixed_schema)

    np.testing.assert_array_equal(np.isnan(table.X[:, 0]), [True, False, True])
    np.testing.assert_array_equal(np.isnan(table.X[:, 4]), [True, True, True])
    # A missing category leaves every one-hot column of that feature unknown.
    assert np.isnan(table.X[1, 1:4]).all()
    assert not np.isnan(table.X[[0, 2], 1:4]).any()


def test_npz_categorical_and_missing_values(tmp_path: Path, load_schema: Schema) -> None:
    np.savez(
        tmp_path / "d.npz",
        age=np.array([30.0, np.nan]),
        smoker=np.array(["yes", ""]),
        income=np.array([1, 2]),
        target=np.array([1, 0]),
    )
    table = load_table(tmp_path / "d.npz", load_schema)

    np.testing.assert_array_equal(table.X[0], [30, 0, 1, 0, 1])
    assert np.isnan(table.X[1, :4]).all()
    assert table.X[1, 4] == 2
    np.testing.assert_array_equal(table.y, [1, 0])


def test_semicolon_delimited_csv_is_read(mixed_schema: Path, write_file: WriteFile) -> None:
    data = write_file("d.csv", "age;smoker;income;target\n1.5;no;2;1\n")
    table = load_table(data, mixed_schema)
    np.testing.assert_array_equal(table.X, [[1.5, 1, 0, 0, 2]])


def test_extra_columns_and_column_order_do_not_matter(
    mixed_schema: Path, write_file: WriteFile
) -> None:
    data = write_file("d.csv", "id,target,income,smoker,age\n7,1,5,yes,60\n")
    table = load_table(data, mixed_schema)
    np.testing.assert_array_equal(table.X, [[60, 0, 1, 0, 5]])
    np.testing.assert_array_equal(table.y, [1])


@pytest.mark.parametrize("text", ["1", "1.0", " 1 ", "1e0"])
def test_integer_label_written_in_any_numeric_form_names_its_class(
    mixed_schema: Path, write_file: WriteFile, text: str
) -> None:
    data = write_file("d.csv", f"age,smoker,income,target\n1,no,2,{text}\n")
    np.testing.assert_array_equal(load_table(data, mixed_schema).y, [1])


def test_text_labels_map_to_schema_order(write_file: WriteFile) -> None:
    schema = write_file(
        "s.toml",
        '[label]\ncolumn = "grade"\nclasses = ["low", "mid", "high"]\n\n'
        '[features]\nx = "numeric"\n',
    )
    data = write_file("d.csv", "x,grade\n1,high\n2,low\n3,mid\n")
    np.testing.assert_array_equal(load_table(data, schema).y, [2, 0, 1])


def test_class_and_category_named_like_a_missing_token_are_values(
    write_file: WriteFile,
) -> None:
    # "none" is a missing-value token, but a schema may use it as a real value.
    schema = write_file(
        "s.toml",
        '[label]\ncolumn = "severity"\nclasses = ["none", "mild", "severe"]\n\n'
        '[features]\nsmoker = { categories = ["none", "light", "heavy"] }\n',
    )
    data = write_file("d.csv", "smoker,severity\nnone,mild\nheavy,none\n,severe\n")
    table = load_table(data, schema)

    np.testing.assert_array_equal(table.y, [1, 0, 2])
    np.testing.assert_array_equal(table.X[:2], [[1, 0, 0], [0, 0, 1]])
    assert np.isnan(table.X[2]).all()


def test_text_classes_that_look_numeric_round_trip_through_csv(tmp_path: Path) -> None:
    schema = Schema.from_dict(
        {"label": {"column": "code", "classes": ["01", "02"]}, "features": {"x": "numeric"}}
    )
    schema_path = schema.save(tmp_path / "s.toml")
    (tmp_path / "d.csv").write_text("x,code\n1,02\n2,01\n", encoding="utf-8")
    np.testing.assert_array_equal(load_table(tmp_path / "d.csv", schema_path).y, [1, 0])


def test_builtin_sets_have_known_shapes() -> None:
    digits = load_builtin("digits")
    assert digits.X.shape == (1797, 64)
    assert digits.schema.image_shape == (1, 8, 8)
    assert digits.schema.num_classes == 10
    wine = load_table("wine")
    assert wine.X.shape == (178, 13)
    assert wine.schema.num_classes == 3


@pytest.mark.parametrize(
    ("name", "loader"),
    [("digits", "load_digits"), ("breast-cancer", "load_breast_cancer"), ("wine", "load_wine")],
)
def test_builtin_sets_equal_scikit_learns_own_loaders(name: str, loader: str) -> None:
    """The files are read without scikit-learn; its loaders are the reference."""
    from sklearn import datasets

    reference = getattr(datasets, loader)()
    table = load_builtin(name)
    np.testing.assert_array_equal(table.X, reference.data)
    np.testing.assert_array_equal(table.y, reference.target)
    assert table.X.dtype == np.float64 and table.y.dtype == np.int64
    if name != "digits":  # digits' columns are named by position in the 8x8 image
        assert table.feature_names == [str(n) for n in reference.feature_names]


def test_loading_a_builtin_set_does_not_import_scikit_learn() -> None:
    code = (
        "import sys\nfrom core_training.data import load_builtin\n"
        "for name in ('digits', 'breast-cancer', 'wine'):\n    load_builtin(name)\n"
        "print('sklearn' in sys.modules)"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=Path(__file__).resolve().parents[2],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"


def test_synthetic_set_honours_minority_fraction_and_seed() -> None:
    a = load_builtin("synthetic", rows=1000, features=6, minority_fraction=0.1, seed=3)
    b = load_builtin("synthetic", rows=1000, features=6, minority_fraction=0.1, seed=3)
    assert a.X.shape == (1000, 6)
    np.testing.assert_array_equal(a.X, b.X)
    assert 0.07 < np.mean(a.y == 1) < 0.13
