"""EarlyStopping: patience, min-delta, direction, NaN and resumable state."""

from __future__ import annotations

import json
import math

from fl_server.early_stopping import EarlyStopping


def feed(es: EarlyStopping, values: list[float], start: int = 1) -> list[bool]:
    return [es.update(r, v) for r, v in enumerate(values, start=start)]


def test_first_value_is_a_new_best() -> None:
    es = EarlyStopping(patience=3)
    assert es.update(1, 0.7) is True
    assert (es.best, es.best_round, es.rounds_without_improvement) == (0.7, 1, 0)


def test_patience_counts_rounds_without_improvement() -> None:
    es = EarlyStopping(patience=5)
    assert feed(es, [1.0, 0.9, 0.95, 0.95, 0.91]) == [True, True, False, False, False]
    assert es.rounds_without_improvement == 3
    assert (es.best, es.best_round) == (0.9, 2)


def test_improvement_resets_the_count() -> None:
    es = EarlyStopping(patience=5)
    feed(es, [1.0, 1.1, 1.2, 0.5])
    assert es.rounds_without_improvement == 0
    assert (es.best, es.best_round) == (0.5, 4)


def test_improvement_smaller_than_min_delta_does_not_count() -> None:
    es = EarlyStopping(patience=5, min_delta=0.25)
    assert feed(es, [1.0, 0.875]) == [True, False]
    assert (es.best, es.best_round, es.rounds_without_improvement) == (1.0, 1, 1)


def test_improvement_of_exactly_min_delta_does_not_count() -> None:
    es = EarlyStopping(patience=5, min_delta=0.25)
    assert feed(es, [1.0, 0.75]) == [True, False]
    assert es.best == 1.0


def test_improvement_larger_than_min_delta_counts() -> None:
    es = EarlyStopping(patience=5, min_delta=0.25)
    assert feed(es, [1.0, 0.875, 0.5]) == [True, False, True]
    assert (es.best, es.best_round, es.rounds_without_improvement) == (0.5, 3, 0)


def test_higher_is_better_counts_a_rising_accuracy_as_improvement() -> None:
    es = EarlyStopping(patience=3, higher_is_better=True)
    assert feed(es, [0.5, 0.625, 0.75]) == [True, True, True]
    assert (es.best, es.best_round) == (0.75, 3)


def test_higher_is_better_does_not_count_a_falling_accuracy() -> None:
    es = EarlyStopping(patience=3, higher_is_better=True)
    assert feed(es, [0.75, 0.5, 0.25]) == [True, False, False]
    assert (es.best, es.rounds_without_improvement) == (0.75, 2)


def test_higher_is_better_respects_min_delta() -> None:
    es = EarlyStopping(patience=3, min_delta=0.125, higher_is_better=True)
    assert feed(es, [0.5, 0.625, 0.75]) == [True, False, True]


def test_nan_never_improves_an_existing_best() -> None:
    es = EarlyStopping(patience=3)
    feed(es, [0.5])
    assert es.update(2, math.nan) is False
    assert (es.best, es.best_round, es.rounds_without_improvement) == (0.5, 1, 1)


def test_nan_as_first_value_sets_no_best() -> None:
    es = EarlyStopping(patience=3)
    assert es.update(1, math.nan) is False
    assert es.best is None
    assert es.rounds_without_improvement == 1
    assert es.update(2, 9.0) is True


def test_nan_never_improves_when_higher_is_better() -> None:
    es = EarlyStopping(patience=3, higher_is_better=True)
    feed(es, [0.5])
    assert es.update(2, math.nan) is False
    assert es.best == 0.5


def test_should_stop_after_exactly_patience_bad_rounds() -> None:
    es = EarlyStopping(patience=3)
    es.update(1, 1.0)
    stops = []
    for r in range(2, 5):
        es.update(r, 2.0)
        stops.append(es.should_stop)
    assert stops == [False, False, True]


def test_nan_rounds_count_towards_patience() -> None:
    es = EarlyStopping(patience=2)
    feed(es, [1.0, math.nan, math.nan])
    assert es.should_stop


def test_should_stop_is_false_while_improving() -> None:
    es = EarlyStopping(patience=1)
    feed(es, [4.0, 3.0, 2.0, 1.0])
    assert not es.should_stop


def test_round_trip_through_dict_resumes_identically() -> None:
    original = EarlyStopping(patience=3, min_delta=0.01, higher_is_better=True)
    feed(original, [0.5, 0.7, 0.69])
    # Checkpoints store the dict in JSON metadata / torch payloads: go through JSON.
    restored = EarlyStopping.from_dict(json.loads(json.dumps(original.to_dict())))
    assert restored == original
    rest = [0.705, 0.72, 0.71, 0.6, 0.5]
    for r, v in enumerate(rest, start=4):
        assert restored.update(r, v) == original.update(r, v)
        assert restored.to_dict() == original.to_dict()
        assert restored.should_stop == original.should_stop
    assert original.should_stop
    assert (original.best, original.best_round) == (0.72, 5)
