"""bench.median: the median of several runs' JSON, figure by figure."""

from bench.median import lookup, median_of


def test_median_of_each_shared_number_and_first_of_the_rest() -> None:
    runs = [
        {"ingest": {"events_per_s": 10.0, "txn": {"p99_ms": 9}}, "code": "a", "only": 1},
        {"ingest": {"events_per_s": 30.0, "txn": {"p99_ms": 1}}, "code": "a"},
        {"ingest": {"events_per_s": 20.0, "txn": {"p99_ms": 5}}, "code": "b"},
    ]
    median = median_of(runs)
    assert median == {"ingest": {"events_per_s": 20.0, "txn": {"p99_ms": 5}}, "code": "a"}
    assert lookup(median, ("ingest", "txn", "p99_ms")) == 5
    assert lookup(median, ("queries", "page")) is None


def test_booleans_are_not_averaged() -> None:
    assert median_of([{"ok": True}, {"ok": False}, {"ok": False}]) == {"ok": True}
