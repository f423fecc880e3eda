"""An image silo's statistics reply is checked like a table's: one column per channel,
finite, counts agreeing with the images it reported, and figures that pixel values in
[0, 1] can have. A bad one is that node's problem, never an exception."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from flwr.app import (
    Array,
    ArrayRecord,
    ConfigRecord,
    Message,
    MessageType,
    Metadata,
    MetricRecord,
    RecordDict,
)
from flwr.app.message.message import make_message

from core_training.channel_stats import compute_channel_stats
from core_training.preprocess import compute_stats
from core_training.schema import Schema
from fl_common import protocol as p
from fl_server.replies import Problem, StatsReply, parse_stats

NODE, IMAGES = 3, 40
SCHEMA = Schema.image((0, 1), 3, 4, 4)


def image_stats(**changes: Any) -> dict[str, Any]:
    X = np.random.default_rng(0).random((IMAGES, 48))
    stats = compute_channel_stats(X, np.arange(IMAGES) % 2, 2, (3, 4, 4)).to_dict()
    stats.update(changes)
    return stats


def stats_reply(arrays: dict[str, Any], rows: int = IMAGES) -> Message:
    toml = SCHEMA.to_toml()
    meta = Metadata(1, "m", NODE, 0, "", "q", 0.0, 60.0, MessageType.QUERY)
    content = RecordDict(
        {
            p.STATS: ArrayRecord({k: Array(np.asarray(v)) for k, v in arrays.items()}),
            p.METRICS: MetricRecord({p.NUM_EXAMPLES: rows}),
            p.INFO: ConfigRecord(
                {
                    "status": "ok",
                    "silo": "s",
                    "schema": toml,
                    "schema_digest": p.schema_digest(toml),
                }
            ),
        }
    )
    return make_message(meta, content=content)


def test_per_channel_statistics_of_the_reported_images_are_accepted() -> None:
    parsed = parse_stats(stats_reply(image_stats()), NODE, SCHEMA)
    assert isinstance(parsed, StatsReply) and parsed.rows == IMAGES
    assert parsed.stats is not None and parsed.stats.mean.shape == (3,)


def test_per_pixel_statistics_are_rejected_by_shape() -> None:
    X = np.random.default_rng(0).random((IMAGES, 48))
    per_pixel = compute_stats(X, np.arange(IMAGES) % 2, 2).to_dict()
    parsed = parse_stats(stats_reply(per_pixel), NODE, SCHEMA)
    assert isinstance(parsed, Problem) and parsed.kind == "rejected"
    assert "shape (48,), expected (3,)" in parsed.reason


@pytest.mark.parametrize(
    ("stats", "reason"),
    [
        (image_stats(count=[40.0, 40.0, 39.0]), "every channel of an image silo counts its"),
        (image_stats(mean=[0.5, 1.5, 0.5], maximum=[1.0, 2.0, 1.0]), "outside [0, 1]"),
        (image_stats(minimum=[-0.1, 0.0, 0.0]), "outside [0, 1]"),
        (image_stats(m2=[0.1, 11.0, 0.1]), "more spread than pixels in [0, 1] allow"),
        (image_stats(m3=[0.0, float("inf"), 0.0]), "finite"),
    ],
)
def test_impossible_image_statistics_are_rejected(stats: dict[str, Any], reason: str) -> None:
    parsed = parse_stats(stats_reply(stats), NODE, SCHEMA)
    assert isinstance(parsed, Problem) and parsed.kind == "rejected", parsed
    assert reason in parsed.reason
