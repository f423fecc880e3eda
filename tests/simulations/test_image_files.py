"""The digits as image silos: each silo's PNG folder loads back to scikit-learn's own
digits (scaled to 0..255, enlarged by repeating pixels), and no image is in two
folders."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from sklearn.datasets import load_digits

from core_training.data import load_table
from core_training.schema import Schema
from simulations.image_files import make_digit_images


def test_silo_folders_hold_the_digits_split_between_silos_and_test(tmp_path: Path) -> None:
    written = make_digit_images(tmp_path, silos=["a", "b"], size=16)
    assert [p.name for p, _ in written] == ["schema.toml", "a", "b", "test"]
    schema = Schema.load(tmp_path / "schema.toml")
    assert schema.is_image and schema.image_shape == (1, 16, 16)
    digits = load_digits()
    expected = np.rint(digits.images * 255 / 16).repeat(2, axis=1).repeat(2, axis=2)
    reference = {
        (img.tobytes(), int(t))
        for img, t in zip(expected.astype(np.uint8), digits.target, strict=True)
    }
    seen = []
    for name, count in (("a", written[1][1]), ("b", written[2][1]), ("test", written[3][1])):
        table = load_table(tmp_path / name, schema)
        assert len(table) == count
        pixels = np.rint(table.X * 255).astype(np.uint8).reshape(-1, 16, 16)
        seen += [(img.tobytes(), int(c)) for img, c in zip(pixels, table.y, strict=True)]
    assert len(seen) == len(digits.target)
    assert set(seen) <= reference
    assert written[3][1] == round(0.2 * len(digits.target))  # the server's held-out share
