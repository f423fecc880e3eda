"""Image silos load into a Table whose pixels are what the files hold: PNG and JPEG
folders (one sub-folder per class) and NPZ arrays of (N, C, H, W) pixels. The expected
values come from numpy arrays written with Pillow, or Pillow's own decoding."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from core_training.data import load_table
from core_training.schema import DataError, Schema

GRAY = Schema.image(("cat", "dog"), 1, 5, 4)
RGB = Schema.image((0, 1, 2), 3, 6, 7)


def _images(rng: np.random.Generator, n: int, shape: tuple[int, int, int]) -> np.ndarray:
    return rng.integers(0, 256, size=(n, *shape), dtype=np.uint8)


def _save(image: np.ndarray, path: Path, **kwargs: object) -> None:
    """Write a (C, H, W) uint8 image with Pillow."""
    path.parent.mkdir(parents=True, exist_ok=True)
    array = image[0] if image.shape[0] == 1 else image.transpose(1, 2, 0)
    Image.fromarray(np.ascontiguousarray(array)).save(path, **kwargs)


def test_png_folder_holds_the_written_pixels_scaled_to_unit_range(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    images = _images(rng, 6, GRAY.image_shape)
    labels = ["cat", "dog", "dog", "cat", "dog", "cat"]
    for i, (image, label) in enumerate(zip(images, labels, strict=True)):
        _save(image, tmp_path / "silo" / label / f"{i}.png")
    table = load_table(tmp_path / "silo", GRAY)
    # rows come in folder order (cat, then dog), files in name order within each
    order = [0, 3, 5, 1, 2, 4]
    assert table.X.shape == (6, 20)
    assert np.array_equal(np.rint(table.X * 255).astype(np.uint8), images[order].reshape(6, -1))
    assert table.y.tolist() == [0, 0, 0, 1, 1, 1]
    assert table.X.min() >= 0 and table.X.max() <= 1


def test_rgb_png_pixels_are_flattened_channel_first(tmp_path: Path) -> None:
    image = _images(np.random.default_rng(2), 1, RGB.image_shape)[0]
    _save(image, tmp_path / "silo" / "2" / "only.png")
    table = load_table(tmp_path / "silo", RGB)
    assert table.y.tolist() == [2]
    np.testing.assert_allclose(table.X[0], image.reshape(-1) / 255.0, rtol=0, atol=1e-7)
    # the second channel of the top-left pixel sits at column H * W
    assert table.X[0, 6 * 7] == pytest.approx(image[1, 0, 0] / 255.0)


def test_jpeg_folder_matches_pillows_decoding(tmp_path: Path) -> None:
    images = _images(np.random.default_rng(3), 4, RGB.image_shape)
    paths = []
    for i, image in enumerate(images):
        paths.append(tmp_path / "silo" / str(i % 3) / f"{i}.jpg")
        _save(image, paths[-1], quality=90)
    table = load_table(tmp_path / "silo", RGB)
    # folder order 0, 1, 2 -> files 0 and 3 (class 0), 1 (class 1), 2 (class 2)
    decoded = [np.asarray(Image.open(paths[i]).convert("RGB")) for i in (0, 3, 1, 2)]
    expected = np.stack([d.transpose(2, 0, 1).reshape(-1) for d in decoded]) / 255.0
    np.testing.assert_allclose(table.X, expected, rtol=0, atol=1e-7)
    assert table.y.tolist() == [0, 0, 1, 2]


def test_npz_of_uint8_images_is_scaled_and_labelled(tmp_path: Path) -> None:
    rng = np.random.default_rng(4)
    images = _images(rng, 5, RGB.image_shape)
    labels = np.array([2, 0, 1, 1, 0])
    np.savez(tmp_path / "silo.npz", X=images, y=labels)
    table = load_table(tmp_path / "silo.npz", RGB)
    np.testing.assert_allclose(table.X, images.reshape(5, -1) / 255.0, rtol=0, atol=1e-7)
    assert table.y.tolist() == [2, 0, 1, 1, 0]


def test_npz_of_float_images_keeps_values_in_unit_range(tmp_path: Path) -> None:
    images = np.random.default_rng(5).random((3, 1, 5, 4))
    np.savez(tmp_path / "silo.npz", X=images, y=np.array(["dog", "cat", "dog"]))
    table = load_table(tmp_path / "silo.npz", GRAY)
    np.testing.assert_allclose(table.X, images.reshape(3, -1), rtol=1e-6)
    assert table.y.tolist() == [1, 0, 1]


# -- every bad image is named with its path --------------------------------------------


def _problems(path: Path, schema: Schema) -> list[str]:
    with pytest.raises(DataError) as info:
        load_table(path, schema)
    return info.value.problems  # type: ignore[attr-defined]


def test_each_bad_image_is_reported_with_its_path_and_what_is_wrong(tmp_path: Path) -> None:
    silo = tmp_path / "silo"
    good = _images(np.random.default_rng(6), 1, GRAY.image_shape)[0]
    _save(good, silo / "cat" / "good.png")
    (silo / "cat" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    _save(np.zeros((1, 6, 4), np.uint8), silo / "cat" / "tall.png")
    _save(np.zeros((3, 5, 4), np.uint8), silo / "dog" / "colour.png")
    Image.new("RGBA", (4, 5)).save(silo / "dog" / "alpha.png")
    (silo / "dog" / "notes.txt").write_text("not an image")
    _save(good, silo / "bird" / "x.png")
    (silo / "empty").mkdir()
    problems = _problems(silo, Schema.image(("cat", "dog", "empty"), 1, 5, 4))
    by_file = {p.split(": ", 1)[0]: p.split(": ", 1)[1] for p in problems}
    assert set(by_file) == {
        str(silo / name)
        for name in (
            "bird",
            "empty",
            "cat/broken.png",
            "cat/tall.png",
            "dog/colour.png",
            "dog/alpha.png",
            "dog/notes.txt",
        )
    }
    assert "not one of the schema's classes" in by_file[str(silo / "bird")]
    assert "empty class folder" in by_file[str(silo / "empty")]
    assert "cannot be read as an image" in by_file[str(silo / "cat/broken.png")]
    assert "is 4 x 6 pixels" in by_file[str(silo / "cat/tall.png")]
    assert "is RGB;" in by_file[str(silo / "dog/colour.png")]
    assert "RGBA" in by_file[str(silo / "dog/alpha.png")]
    assert "not a PNG or JPEG file" in by_file[str(silo / "dog/notes.txt")]


def test_truncated_png_is_unreadable_not_a_crash(tmp_path: Path) -> None:
    _save(_images(np.random.default_rng(7), 1, GRAY.image_shape)[0], tmp_path / "full.png")
    data = (tmp_path / "full.png").read_bytes()
    (tmp_path / "silo" / "cat").mkdir(parents=True)
    (tmp_path / "silo" / "cat" / "cut.png").write_bytes(data[: len(data) // 2])
    [problem] = _problems(tmp_path / "silo", GRAY)
    assert problem.startswith(str(tmp_path / "silo" / "cat" / "cut.png"))
    assert "cannot be read" in problem


def test_rgb_schema_refuses_grayscale_files(tmp_path: Path) -> None:
    _save(np.zeros((1, 6, 7), np.uint8), tmp_path / "silo" / "0" / "gray.jpg")
    [problem] = _problems(tmp_path / "silo", RGB)
    assert "gray.jpg: is grayscale; the schema's images have 3 channel(s) (RGB)" in problem


def test_folder_without_images_is_refused(tmp_path: Path) -> None:
    (tmp_path / "silo").mkdir()
    with pytest.raises(DataError, match="holds no images"):
        load_table(tmp_path / "silo", GRAY)


def test_npz_of_wrong_shape_names_the_shape_found_and_wanted(tmp_path: Path) -> None:
    np.savez(tmp_path / "s.npz", X=np.zeros((2, 5, 4, 1), np.uint8), y=np.array([0, 1]))
    with pytest.raises(DataError, match=r"X has shape \(2, 5, 4, 1\).*\(N, 1, 5, 4\)"):
        load_table(tmp_path / "s.npz", GRAY)


def test_npz_with_pixels_outside_unit_range_names_each_image(tmp_path: Path) -> None:
    X = np.full((3, 1, 5, 4), 0.5)
    X[1, 0, 2, 2] = 1.5
    X[2, 0, 0, 0] = np.nan
    np.savez(tmp_path / "s.npz", X=X, y=np.array(["cat", "dog", "lion"]))
    problems = _problems(tmp_path / "s.npz", GRAY)
    assert any(p.startswith("image 1: values outside [0, 1]") for p in problems)
    assert any(p.startswith("image 2: NaN or infinite") for p in problems)
    assert any("image 2, label column 'label': 'lion'" in p for p in problems)
    assert len(problems) == 3


def test_csv_file_with_an_image_schema_says_what_image_data_is(tmp_path: Path) -> None:
    (tmp_path / "d.csv").write_text("a,label\n1,cat\n")
    with pytest.raises(DataError, match="folder of class sub-folders"):
        load_table(tmp_path / "d.csv", GRAY)
