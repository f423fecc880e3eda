"""An image schema names the image size and the classes; its features are the pixels."""

from __future__ import annotations

import tomllib

import pytest

from core_training.schema import DataError, Schema, schema_difference

TOML = """\
[image]
channels = 3
height = 4
width = 2

[label]
classes = ["cat", "dog"]
"""


def test_image_table_gives_one_feature_per_pixel_value_in_channel_row_column_order() -> None:
    schema = Schema.from_dict(tomllib.loads(TOML))
    assert schema.is_image and schema.image_shape == (3, 4, 2)
    assert schema.num_features == 24
    assert schema.feature_names[:3] == ["c0_y0_x0", "c0_y0_x1", "c0_y1_x0"]
    assert schema.feature_names[8] == "c1_y0_x0"
    assert schema.stats_width == 3  # statistics are per channel
    assert schema.label == "label"


def test_image_schema_round_trips_through_toml_and_dict() -> None:
    schema = Schema.from_dict(tomllib.loads(TOML))
    assert Schema.from_dict(tomllib.loads(schema.to_toml())) == schema
    assert Schema.from_dict(schema.to_dict()) == schema
    assert "[features]" not in schema.to_toml()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ('[features]\na = "numeric"\n', "remove features"),
        ("image_shape = [3, 4, 2]\n", "remove image_shape"),
    ],
)
def test_image_schema_with_features_or_image_shape_is_refused(extra: str, message: str) -> None:
    raw = tomllib.loads(extra + "\n" + TOML if extra.startswith("image_shape") else TOML + extra)
    with pytest.raises(DataError, match=message):
        Schema.from_dict(raw)


@pytest.mark.parametrize(
    ("image", "message"),
    [
        ("channels = 2\nheight = 4\nwidth = 4", "1 \\(grayscale\\) or 3 \\(RGB\\)"),
        ("channels = 1\nheight = 0\nwidth = 4", "height and width must be in"),
        ("channels = 1\nheight = 4", "exactly channels, height and width"),
        ('channels = 1\nheight = "4"\nwidth = 4', "must be integers"),
    ],
)
def test_bad_image_sizes_are_refused(image: str, message: str) -> None:
    raw = tomllib.loads(f"[image]\n{image}\n[label]\nclasses = [0, 1]\n")
    with pytest.raises(DataError, match=message):
        Schema.from_dict(raw)


def test_image_and_tabular_schemas_of_the_same_size_differ() -> None:
    image = Schema.image((0, 1), 1, 2, 2)
    table = Schema(image.label, image.classes, image.features, image.image_shape)
    assert schema_difference(table, image) == "table data, expected image data"
