"""The median of several benchmark runs, each a fresh process, database and bridge.

    .venv/bin/python -m bench.median --runs 3 [bench.ingest arguments ...]

Runs ``python -m bench.ingest`` with the given arguments ``--runs`` times, one after the
other, keeps each run's last line (its JSON), and prints the key figures of every run
with their median, then one JSON line: the median of every numeric figure (same shape
as one run's JSON), and the runs themselves under ``runs``.
"""

from __future__ import annotations

import argparse
import json
import signal
import statistics
import tempfile
from pathlib import Path
from typing import Any

from daarion_bridge.devtools.process import ChildProcess, python_module

from .harness import say

# (label, path in the run's JSON)
KEY_FIGURES = [
    ("events/s (bridge)", ("ingest", "events_per_s")),
    ("floor events/s (COPY per txn)", ("ingest", "floor", "events_per_s")),
    ("bridge / floor", ("ingest", "ratio_bridge_over_floor")),
    ("txn latency p50 ms (100 ev)", ("ingest", "txn_latency", "p50_ms")),
    ("txn latency p99 ms (100 ev)", ("ingest", "txn_latency", "p99_ms")),
    ("1-event latency p50 ms", ("ingest", "single_event_latency", "p50_ms")),
    ("1-event latency p99 ms", ("ingest", "single_event_latency", "p99_ms")),
    ("bridge CPU us/event", ("ingest", "model", "bridge_cpu_us_per_event")),
    ("postgres CPU us/event", ("ingest", "model", "postgres_cpu_us_per_event")),
    ("(bridge + postgres CPU) / wall", ("ingest", "model", "cpu_busy_over_wall")),
    ("bridge RSS start MB", ("ingest", "bridge_rss_mb", "start")),
    ("bridge RSS a tenth in MB", ("ingest", "bridge_rss_mb", "after_a_tenth")),
    ("bridge RSS end MB", ("ingest", "bridge_rss_mb", "end")),
    ("history page p99 ms (auto plans)", ("queries", "channel_page_cursor", "p99_ms")),
    ("history page p99 ms (custom plans)",
     ("queries", "channel_page_cursor", "custom_plan_timing", "p99_ms")),
    ("newest page p99 ms (auto plans)", ("queries", "channel_page_latest", "p99_ms")),
    ("microDAO channel list p99 ms", ("queries", "microdao_channels", "p99_ms")),
    ("user's channels p99 ms", ("queries", "user_channels", "p99_ms")),
    ("agent's open sessions p99 ms", ("queries", "agent_open_sessions", "p99_ms")),
    ("start-up s (spawn to ready)", ("startup", "spawn_to_ready_s")),
]  # fmt: skip


def median_of(values: list[Any]) -> Any:
    """The median of numbers; for dicts, the median of each key all runs share; else the
    first run's value (the same in every run: arguments, versions)."""
    if all(isinstance(v, dict) for v in values):
        shared = set(values[0]).intersection(*values[1:])
        return {k: median_of([v[k] for v in values]) for k in values[0] if k in shared}
    if all(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
        return statistics.median(values)
    return values[0]


def lookup(result: dict[str, Any], path: tuple[str, ...]) -> Any:
    for key in path:
        if not isinstance(result, dict) or key not in result:
            return None
        result = result[key]
    return result


class Stopped(Exception):
    """SIGTERM (`timeout`, CI): it reached this process only, not its run."""


def _stop(*_: Any) -> None:
    raise Stopped


def run_once(bench_args: list[str], n: int, runs: int) -> dict[str, Any]:
    say(f"run {n}/{runs}: python -m bench.ingest {' '.join(bench_args)}")
    with tempfile.TemporaryDirectory(prefix="daarion-bench-median-") as tmp:
        stdout = Path(tmp) / "stdout"
        # Our process group: Ctrl-C reaches the run too; its progress (stderr) shows here.
        run = ChildProcess(
            f"run {n}",
            python_module("bench.ingest", *bench_args),
            output=stdout,
            stderr_to_output=False,
            own_group=False,
        )
        run.spawn()
        assert run.proc is not None
        try:
            run.proc.wait()
        except Stopped:
            run.signal(signal.SIGTERM)  # the run stops and cleans up as on Ctrl-C
            run.proc.wait()
            raise
        except KeyboardInterrupt:
            run.proc.wait()  # Ctrl-C reached the run too (one process group): it cleans up
            raise
        code = run.proc.returncode
        lines = stdout.read_text(encoding="utf-8").strip().splitlines()
    if code != 0 or not lines:
        raise SystemExit(f"bench.median: run {n} failed (exit {code})")
    return json.loads(lines[-1])


def figure(value: float) -> str:
    return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.4g}"


def report(results: list[dict[str, Any]], median: dict[str, Any]) -> None:
    rows = []
    for label, path in KEY_FIGURES:
        values = [lookup(r, path) for r in results]
        if any(v is None for v in values):
            continue
        each = " / ".join(figure(v) for v in values)
        rows.append((label, figure(lookup(median, path)), each))
    width = max((len(r[0]) for r in rows), default=0)
    print(f"Median of {len(results)} runs")
    print("-" * (width + 30))
    print(f"  {'figure':<{width}}  {'median':>10}  runs")
    for label, med, each in rows:
        print(f"  {label:<{width}}  {med:>10}  {each}")
    print()


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--runs", type=int, default=3, help="how many runs (3)")
    args, bench_args = p.parse_known_args(argv)
    if args.runs < 1:
        p.error("--runs must be at least 1")
    signal.signal(signal.SIGTERM, _stop)
    try:
        results = [run_once(bench_args, n, args.runs) for n in range(1, args.runs + 1)]
    except (Stopped, KeyboardInterrupt):
        say("stopped; the run under way stopped too and removed what it started")
        raise SystemExit(130) from None
    median = median_of(results)
    report(results, median)
    print(json.dumps({"median": median, "runs": results}, separators=(",", ":"), default=str))


if __name__ == "__main__":
    main()
