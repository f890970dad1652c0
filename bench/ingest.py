"""Ingest benchmark of the bridge process, and (``--mode size``) the index at size.

    .venv/bin/python -m bench.ingest [--quick] [--events N] [--batch N] [--channels N]
        [--senders N] [--database-url URL] [--seed N] [--keep]
    .venv/bin/python -m bench.ingest --mode size [--messages N] [--channels N] [--users N]

Ingest mode: PostgreSQL (embedded in a temp dir, or a fresh database on
``--database-url``), a real Synapse and the real bridge process (``python -m
daarion_bridge -c cfg -r reg``). Synapse only creates the channels (rooms made over the
client API, the bot invited, each room's ``channels`` row awaited) and is then stopped,
so none of its own pushes can overlap the measured transactions. The benchmark then
PUTs the transactions to the bridge itself, as Synapse does (see driver.py), one in
flight: a warm-up (not counted), the measured phase, and a phase of 1-event
transactions. The floor is the same rows written with COPY (see floor.py).

Printed: a table on stdout and, last, one JSON line with every figure. Progress goes to
stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import platform
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import asyncpg

from daarion_bridge.config import load_config
from daarion_bridge.db.bookkeeping import events_digest
from daarion_bridge.devtools.nats import LocalNats
from daarion_bridge.translate.agents import AgentDirectory
from daarion_bridge.translate.events import translate_event
from daarion_bridge.web.appservice import parse_json

from . import encrypted, floor, size
from .driver import Driver, latency, ms
from .e2ee import Counts, Sealer, prepare
from .harness import (
    BOT,
    CpuMeter,
    Postgres,
    Stack,
    db_stats,
    make_workdir,
    postmaster_pid,
    rss,
    say,
    wait_stats_flushed,
)
from .workload import Phase, Workload

INGEST_START_MS = size.FILL_END_MS + 86_400_000
REPO = Path(__file__).resolve().parent.parent
MB = 1024 * 1024


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.ingest", description=__doc__.split("\n")[0])
    p.add_argument("--mode", choices=("ingest", "size"), default="ingest")
    p.add_argument("--quick", action="store_true", help="smoke run: 10,000 events")
    p.add_argument("--events", type=int, default=None, help="measured events (100,000)")
    p.add_argument("--batch", type=int, default=100, help="events per transaction (100)")
    p.add_argument(
        "--channels",
        type=int,
        default=None,
        help="ingest mode: rooms made via Synapse (100); size mode: filled channels (10,000)",
    )
    p.add_argument("--senders", type=int, default=1000, help="distinct senders (1,000)")
    p.add_argument("--warmup", type=int, default=2000, help="warm-up events, not counted")
    p.add_argument("--single", type=int, default=500, help="1-event transactions (500)")
    p.add_argument("--database-url", default=None, help="server to create fresh databases on")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument(
        "--pg-setting",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a postgresql.conf setting for the embedded server (repeatable), "
        "e.g. max_wal_size=8GB",
    )
    p.add_argument(
        "--nats", action="store_true", help="run a local NATS: events also go through the outbox"
    )
    p.add_argument("--keep", action="store_true", help="keep the temp dir (and databases)")
    p.add_argument(
        "--encrypted",
        action="store_true",
        help="ingest mode: the rooms encrypted, and after the plain phases the same mix "
        "with the people's messages Megolm-encrypted: decryption's cost beside plain",
    )
    p.add_argument(
        "--room-agents",
        type=int,
        default=100,
        help="agents in the config, some invited into the benchmark's rooms (100)",
    )
    g = p.add_argument_group("size mode")
    g.add_argument("--messages", type=int, default=10_000_000)
    g.add_argument("--users", type=int, default=100_000)
    g.add_argument("--agents", type=int, default=1_000, help="filled agents (1,000)")
    g.add_argument("--sessions-per-agent", type=int, default=100)
    g.add_argument("--memberships-per-user", type=float, default=5.0)
    g.add_argument("--big-microdao-channels", type=int, default=1_000)
    g.add_argument("--ingest-channels", type=int, default=100, help="rooms via Synapse (100)")
    g.add_argument("--query-runs", type=int, default=2000, help="timed runs per query")
    g.add_argument("--query-budget", type=float, default=15.0, help="seconds per query at most")
    args = p.parse_args(argv)
    if args.events is None:
        args.events = 10_000 if args.quick else 100_000
    if args.channels is None:
        args.channels = 10_000 if args.mode == "size" else 100
    if args.mode == "ingest" and args.quick:
        args.warmup = min(args.warmup, 1000)
        args.single = min(args.single, 200)
    for name in ("events", "batch", "single"):
        if getattr(args, name) < 1:
            p.error(f"--{name} must be at least 1: each is measured")
    if args.encrypted and args.mode != "ingest":
        p.error("--encrypted is for ingest mode")
    if args.pg_setting and args.database_url:
        p.error("--pg-setting is for the embedded server; set the server of --database-url")
    args.pg_setting = [_pg_setting(p, s) for s in args.pg_setting]
    return args


def _pg_setting(p: argparse.ArgumentParser, given: str) -> str:
    """`name=value` as a postgresql.conf line; the value quoted, as the file wants."""
    name, sep, value = given.partition("=")
    name, value = name.strip(), value.strip()
    if not sep or not re.fullmatch(r"[a-z_][a-z0-9_.]*", name) or not value or "\n" in value:
        p.error(f"--pg-setting {given!r}: expected NAME=VALUE, e.g. max_wal_size=8GB")
    value = value.strip("'").replace("'", "''")
    return f"{name} = '{value}'"


def metric(m: dict[str, float], name: str) -> float:
    return m.get(name, 0.0)


def offline_cpu(phase: Phase, directory: AgentDirectory) -> dict[str, float]:
    """CPU the bridge spends per event outside the database, measured here on the same
    code, one body at a time as the bridge does: parse the JSON (with the bridge's
    parser), digest the event ids, translate every event (finding mentions of the
    config's agents)."""
    json_s = translate_s = 0.0
    clock = time.process_time
    for txn in phase.txns:
        t0 = clock()
        body = parse_json(txn.body)
        t1 = clock()
        events_digest(body["events"])
        for event in body["events"]:
            translate_event(event, bot_mxid=BOT, preview_length=500, agents=directory)
        t2 = clock()
        json_s += t1 - t0
        translate_s += t2 - t1
    return {
        "json_parse_us_per_event": round(json_s / phase.events * 1e6, 2),
        "digest_and_translate_us_per_event": round(translate_s / phase.events * 1e6, 2),
    }


def make_workload(args: argparse.Namespace, stack: Stack) -> Workload:
    senders = [f"@bench-u{i:05d}:localhost" for i in range(args.senders)]
    return Workload(
        stack.rooms,
        senders,
        stack.owner_id,
        seed=args.seed,
        start_ts=INGEST_START_MS,
        agents=stack.agents_in_rooms,
    )


async def prepare_encryption(stack: Stack, wl: Workload) -> Sealer:
    """The rooms encrypted and the bridge devices' keys claimed, while Synapse runs."""
    return await prepare(
        stack,
        {room.room_id: sorted(set(room.members)) for room in wl.rooms},
        {room: [m for m, _ in found] for room, found in stack.agents_in_rooms.items()},
    )


async def measure_ingest(
    args: argparse.Namespace,
    pg: Postgres,
    stack: Stack,
    floor_target: str,
    wl: Workload,
    sealer: Sealer | None = None,
) -> dict[str, Any]:
    """Warm-up, measured phase, 1-event phase, floor; with `sealer`, the encrypted
    warm-up and phase after them. Returns the figures."""
    conn = await asyncpg.connect(stack.database_url)
    try:
        return await _measure(args, pg, stack, conn, floor_target, wl, sealer)
    finally:
        await conn.close()


async def _measure(
    args: argparse.Namespace,
    pg: Postgres,
    stack: Stack,
    conn: asyncpg.Connection,
    floor_target: str,
    wl: Workload,
    sealer: Sealer | None,
) -> dict[str, Any]:
    t = time.perf_counter()
    warm = wl.phase("warmup", args.warmup, args.batch, "bench-warm")
    main = wl.phase("main", args.events, args.batch, "bench-main")
    single = wl.phase("single", args.single, 1, "bench-one")
    if sealer is not None:  # after the plain phases: those stay what they are without it
        enc_warm = wl.phase("encrypted-warmup", args.warmup, args.batch, "bench-encw", sealer.seal)
        before, first = Counts(**vars(sealer.counts)), len(sealer.per_txn)
        enc_main = wl.phase("encrypted", args.events, args.batch, "bench-enc", sealer.seal)
        enc_counts = encrypted.counts_between(before, sealer.counts)
        enc_per_txn = sealer.per_txn[first:]
    say(
        f"workload: {warm.events + main.events + single.events:,} events generated in "
        f"{time.perf_counter() - t:.1f} s; measured phase {main.events:,} events in "
        f"{len(main.txns):,} transactions, {main.body_bytes / MB:.1f} MB of JSON"
    )
    roster = load_config(stack.config).roster
    offline = offline_cpu(main, AgentDirectory(roster))
    channel_ids = [
        r["id"]
        for r in await conn.fetch(
            "SELECT id FROM channels WHERE matrix_room_id = ANY($1::text[])", stack.rooms
        )
    ]
    pm = await postmaster_pid(stack.database_url)
    out: dict[str, Any] = {}
    async with Driver(stack.base_url, stack.hs_token) as driver:
        out["http_baseline"] = latency(await driver.http_baseline())
        t = time.perf_counter()
        await driver.send(warm.txns)
        say(f"warm-up: {warm.events:,} events in {time.perf_counter() - t:.1f} s")

        members_before = await floor.member_ids(conn, channel_ids)
        await wait_stats_flushed(conn)
        stats0 = await db_stats(conn)
        metrics0 = await stack.metrics()
        rss0 = rss(stack.bridge_pid)
        cpu = CpuMeter(stack.bridge_pid, pm)
        step = max(1, len(main.txns) // 10)
        rss_tenth: dict[str, int] = {}

        def progress(n: int) -> None:
            if n % step == 0:
                say(f"measured: {n:,}/{len(main.txns):,} transactions")
            if n == step:  # a tenth of the way: the "after 100,000 of 1,000,000"
                rss_tenth.update(rss(stack.bridge_pid))

        cpu.start()
        t0 = time.perf_counter()
        lat = await driver.send(main.txns, progress)
        elapsed = time.perf_counter() - t0
        cpus = cpu.stop()
        rss1 = rss(stack.bridge_pid)
        metrics1 = await stack.metrics()
        await wait_stats_flushed(conn)
        stats1 = await db_stats(conn)

        # The bridge wrote what it said it did.
        n_msg = await conn.fetchval(
            "SELECT count(*) FROM messages WHERE matrix_event_id = ANY($1::text[])",
            list(main.message_txn),
        )
        n_agent_msg = await conn.fetchval(
            "SELECT count(*) FROM messages WHERE matrix_event_id = ANY($1::text[]) "
            "AND sender_agent_id IS NOT NULL",
            list(main.message_txn),
        )
        dead = await conn.fetchval("SELECT count(*) FROM bridge_dead_letters")
        if n_msg != len(main.message_txn) or n_agent_msg != main.agent_messages or dead:
            raise RuntimeError(
                f"bridge wrote {n_msg} of {len(main.message_txn)} messages ({n_agent_msg} of "
                f"{main.agent_messages} by agents), {dead} dead letters"
            )

        t = time.perf_counter()
        rows = await floor.collect(conn, main, "bench-main", channel_ids, members_before)
        bridge_counts = await floor.counts(conn)
        floor_dbs: list[str] = []
        if floor_target == "fresh":
            for prefix in ("bench_floor", "bench_floor_bulk"):
                url = await pg.new_database(prefix)
                await floor.prepare_fresh(conn, url, rows)
                floor_dbs.append(url)
        say(f"floor rows collected and floor databases prepared in {time.perf_counter() - t:.1f} s")

        metrics_s0 = await stack.metrics()
        lat1 = await driver.send(single.txns)
        metrics_s1 = await stack.metrics()
        rss2 = rss(stack.bridge_pid)

    # the floor
    floor_cpu = CpuMeter(stack.bridge_pid, pm)
    if floor_target == "fresh":
        fconn = await asyncpg.connect(floor_dbs[0])
        try:
            floor_cpu.start()
            floor_s = await floor.run(fconn, rows, bulk=False)
            floor_cpus = floor_cpu.stop()
            floor_counts = await floor.counts(fconn)
        finally:
            await fconn.close()
        if floor_counts != bridge_counts:
            raise RuntimeError(f"floor rows {floor_counts} != bridge rows {bridge_counts}")
        fconn = await asyncpg.connect(floor_dbs[1])
        try:
            bulk_s = await floor.run(fconn, rows, bulk=True)
        finally:
            await fconn.close()
    else:
        batched = await floor.clone_for(conn, rows, "floor1")
        floor_cpu.start()
        floor_s = await floor.run(conn, batched, bulk=False)
        floor_cpus = floor_cpu.stop()
        bulk = await floor.clone_for(conn, rows, "floor2")
        bulk_s = await floor.run(conn, bulk, bulk=True)
    say(f"floor: {floor_s:.2f} s per-transaction COPY, {bulk_s:.2f} s one bulk COPY")

    n_txn = len(main.txns)
    server_sum = metric(metrics1, "daarion_bridge_transaction_seconds_sum") - metric(
        metrics0, "daarion_bridge_transaction_seconds_sum"
    )
    server_n = metric(metrics1, "daarion_bridge_transaction_seconds_count") - metric(
        metrics0, "daarion_bridge_transaction_seconds_count"
    )
    single_sum = metric(metrics_s1, "daarion_bridge_transaction_seconds_sum") - metric(
        metrics_s0, "daarion_bridge_transaction_seconds_sum"
    )
    single_n = metric(metrics_s1, "daarion_bridge_transaction_seconds_count") - metric(
        metrics_s0, "daarion_bridge_transaction_seconds_count"
    )
    applied = {
        k.split('kind="')[1].split('"')[0]: v - metrics0.get(k, 0.0)
        for k, v in metrics1.items()
        if k.startswith("daarion_bridge_events_total{") and 'outcome="applied"' in k
    }
    eps = main.events / elapsed
    batch_mean = server_sum / server_n if server_n else math.nan
    single_mean = single_sum / single_n if single_n else math.nan
    per_event = (batch_mean - single_mean) / (main.events / n_txn - 1) if n_txn else math.nan
    floor_eps = main.events / floor_s
    out.update(
        {
            "events": main.events,
            "transactions": n_txn,
            "batch": args.batch,
            "seconds": round(elapsed, 3),
            "events_per_s": round(eps, 1),
            "transactions_per_s": round(n_txn / elapsed, 2),
            "txn_latency": latency(lat),
            "server_side_txn_mean_ms": ms(server_sum / server_n) if server_n else None,
            "single_event_txns": len(single.txns),
            "single_event_latency": latency(lat1),
            "single_event_server_side_mean_ms": ms(single_sum / single_n) if single_n else None,
            "model": {
                # server-side time = fixed per transaction + marginal per event
                "marginal_ms_per_event": ms(per_event),
                "fixed_ms_per_txn": ms(single_mean - per_event),
                "bridge_cpu_us_per_event": round(cpus["bridge_cpu_s"] / main.events * 1e6, 1),
                "postgres_cpu_us_per_event": (
                    round(cpus["postgres_cpu_s"] / main.events * 1e6, 1)
                    if cpus["postgres_cpu_s"] is not None
                    else None
                ),
                # How much the two sides overlap or wait on round trips: below 1 they
                # took turns with gaps. Unlike events/s, the machine's speed of the hour
                # barely moves it, so it shows what an overlap or a round trip saved.
                "cpu_busy_over_wall": (
                    round((cpus["bridge_cpu_s"] + cpus["postgres_cpu_s"]) / cpus["wall_s"], 3)
                    if cpus["postgres_cpu_s"] is not None and cpus["wall_s"]
                    else None
                ),
                **offline,
            },
            "bridge_rss_mb": {
                "start": round(rss0["rss"] / MB, 1),
                "after_a_tenth": round(rss_tenth.get("rss", 0) / MB, 1),
                "end": round(rss1["rss"] / MB, 1),
                "after_single_phase": round(rss2["rss"] / MB, 1),
                # VmHWM is updated lazily by the kernel: never below a sample we took
                "peak": round(
                    max(rss0["rss"], rss1["rss"], rss2["rss"], rss2.get("peak", 0)) / MB, 1
                ),
            },
            "cpu_s": {k: (round(v, 2) if v is not None else None) for k, v in cpus.items()},
            "db_delta": {k: stats1[k] - stats0[k] for k in stats0},
            "applied": applied,
            "workload": {
                "kinds": dict(main.kinds),
                "agents_in_config": len(roster.agents),
                "rooms_with_agents": len(stack.agents_in_rooms),
                "agents_in_rooms": sum(len(a) for a in stack.agents_in_rooms.values()),
                "agent_messages": main.agent_messages,
                "messages_mentioning_agents": main.mentions,
                "ephemeral": main.ephemeral,
                "json_mb": round(main.body_bytes / MB, 2),
                "warmup_events": warm.events,
            },
            "floor": {
                "rows": dict(rows.totals),
                "unattributed_rows": rows.unattributed,
                "target": floor_target,
                "seconds": round(floor_s, 3),
                "events_per_s": round(floor_eps, 1),
                "cpu_s": {
                    k: (round(v, 2) if v is not None else None) for k, v in floor_cpus.items()
                },
                "bulk_seconds": round(bulk_s, 3),
                "bulk_events_per_s": round(main.events / bulk_s, 1),
            },
            "ratio_bridge_over_floor": round(eps / floor_eps, 4),
            "bridge_time_over_floor_time": round(elapsed / floor_s, 2),
            "bridge_time_over_bulk_floor_time": round(elapsed / bulk_s, 2),
        }
    )
    if sealer is not None:
        async with Driver(stack.base_url, stack.hs_token) as driver:
            out["encrypted"] = await encrypted.measure(
                driver, stack, conn, pm, enc_warm, enc_main, enc_counts, enc_per_txn, out
            )
    return out


def table(rows: list[tuple[str, Any]], title: str) -> str:
    width = max(len(k) for k, _ in rows)
    lines = [title, "-" * len(title)]
    for k, v in rows:
        lines.append(f"  {k:<{width}}  {v}")
    return "\n".join(lines)


def ingest_table(r: dict[str, Any], title: str) -> str:
    lat, one, cpu = r["txn_latency"], r["single_event_latency"], r["cpu_s"]
    f = r["floor"]
    pg_cpu = cpu["postgres_cpu_s"]
    return table(
        [
            ("measured events / transactions", f"{r['events']:,} / {r['transactions']:,}"),
            ("elapsed", f"{r['seconds']:.2f} s"),
            ("events/s (bridge)", f"{r['events_per_s']:,.0f}"),
            (
                f"txn latency p50/p95/p99 ({r['batch']} ev)",
                f"{lat['p50_ms']:.2f} / {lat['p95_ms']:.2f} / {lat['p99_ms']:.2f} ms "
                f"(max {lat['max_ms']:.1f})",
            ),
            ("  of which in handle_transaction", f"{r['server_side_txn_mean_ms']} ms (mean)"),
            (
                "1-event txn latency p50/p95/p99",
                f"{one['p50_ms']:.2f} / {one['p95_ms']:.2f} / {one['p99_ms']:.2f} ms",
            ),
            ("  of which in handle_transaction", f"{r['single_event_server_side_mean_ms']} ms"),
            (
                "model: fixed per txn + per event",
                f"{r['model']['fixed_ms_per_txn']} ms + {r['model']['marginal_ms_per_event']} ms",
            ),
            (
                "CPU per event: bridge / postgres",
                f"{r['model']['bridge_cpu_us_per_event']} / "
                f"{r['model']['postgres_cpu_us_per_event']} us",
            ),
            (
                "  (bridge + postgres CPU) / wall",
                f"{r['model']['cpu_busy_over_wall']} (below 1: waits on round trips and wake-ups)",
            ),
            (
                "  of bridge: JSON / digest+translate",
                f"{r['model']['json_parse_us_per_event']} / "
                f"{r['model']['digest_and_translate_us_per_event']} us (measured offline)",
            ),
            (
                "agents: in config / in rooms / messages / mentions",
                f"{r['workload']['agents_in_config']} / {r['workload']['agents_in_rooms']} in "
                f"{r['workload']['rooms_with_agents']} rooms / "
                f"{r['workload']['agent_messages']:,} / "
                f"{r['workload']['messages_mentioning_agents']:,}",
            ),
            ("HTTP round trip alone (GET live)", f"{r['http_baseline']['p50_ms']:.3f} ms p50"),
            (
                "bridge RSS start / a tenth in / end / peak",
                f"{r['bridge_rss_mb']['start']} / {r['bridge_rss_mb']['after_a_tenth']} / "
                f"{r['bridge_rss_mb']['end']} / {r['bridge_rss_mb']['peak']} MB",
            ),
            (
                "CPU s: bridge / postgres / driver",
                f"{cpu['bridge_cpu_s']} / {pg_cpu} / {cpu['driver_cpu_s']} (wall {cpu['wall_s']}"
                f", other processes {cpu['other_cpu_s']})",
            ),
            ("commits in the phase", r["db_delta"]["xact_commit"]),
            (
                "WAL: MB / full-page images / checkpoints",
                f"{r['db_delta']['wal_bytes'] / MB:,.1f} / {r['db_delta']['wal_fpi']:,} / "
                f"{r['db_delta']['checkpoints']}",
            ),
            (
                "rows inserted / updated",
                f"{r['db_delta']['tup_inserted']:,} / {r['db_delta']['tup_updated']:,}",
            ),
            (
                "floor (COPY per txn) events/s",
                f"{f['events_per_s']:,.0f} ({f['seconds']:.2f} s, rows {f['rows']})",
            ),
            (
                "  CPU s: postgres / driver",
                f"{f['cpu_s']['postgres_cpu_s']} / {f['cpu_s']['driver_cpu_s']} "
                f"(other processes {f['cpu_s']['other_cpu_s']})",
            ),
            ("floor (one bulk COPY) events/s", f"{f['bulk_events_per_s']:,.0f}"),
            ("bridge / floor (events/s)", f"{r['ratio_bridge_over_floor']}"),
            ("bridge time / floor time", f"{r['bridge_time_over_floor_time']}x"),
        ],
        title,
    )


def code_version() -> dict[str, Any]:
    """The commit benchmarked, and whether daarion_bridge/ differs from it (read-only git)."""

    def git(*cmd: str) -> str:
        try:
            return subprocess.run(
                ["git", *cmd], capture_output=True, text=True, timeout=10, cwd=REPO
            ).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""

    return {
        "commit": git("rev-parse", "--short", "HEAD") or None,
        "daarion_bridge_modified": bool(git("status", "--porcelain", "--", "daarion_bridge")),
    }


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    workdir = make_workdir(args.keep)
    say(f"work dir {workdir}{' (kept)' if args.keep else ''}")
    pg = Postgres(workdir, args.database_url, args.pg_setting)
    stack: Stack | None = None
    nats_server: LocalNats | None = None
    result: dict[str, Any] = {
        "mode": args.mode,
        "nats": args.nats,
        "seed": args.seed,
        "code": code_version(),
        "machine": {
            "loadavg_at_start": os.getloadavg(),
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
    }
    try:
        await pg.start()
        result["postgres"] = await pg.settings()
        result["postgres"]["embedded"] = args.database_url is None
        stack = Stack(workdir, await pg.new_database("bench_bridge"))
        stack.agents = args.room_agents
        if args.nats:
            nats_server = LocalNats(workdir / "nats")
            await nats_server.start()
            stack.nats_url = nats_server.url
        await stack.start()
        n_rooms = args.ingest_channels if args.mode == "size" else args.channels
        t = time.perf_counter()
        await stack.create_channels(n_rooms, seed=args.seed)
        result["setup"] = {
            "channels_via_synapse": n_rooms,
            "channels_seconds": round(time.perf_counter() - t, 1),
        }
        wl = make_workload(args, stack)
        sealer = None
        if args.encrypted:
            t = time.perf_counter()
            sealer = await prepare_encryption(stack, wl)
            result["setup"]["encryption_seconds"] = round(time.perf_counter() - t, 1)
            say(f"rooms encrypted, keys claimed ({result['setup']['encryption_seconds']} s)")
        await stack.stop_synapse()
        say("Synapse stopped; from now on only the benchmark talks to the bridge")

        if args.mode == "size":
            spec = size.FillSpec(
                messages=args.messages,
                channels=args.channels,
                users=args.users,
                agents=args.agents,
                sessions_per_agent=args.sessions_per_agent,
                memberships_per_user=args.memberships_per_user,
                big_microdao_channels=args.big_microdao_channels,
                seed=args.seed,
            )
            conn = await asyncpg.connect(stack.database_url)
            try:
                filled = await size.fill(conn, spec, size.preview_pool(4096, args.seed))
                result["fill"] = {
                    "spec": vars(spec),
                    "rows": filled.rows,
                    "seconds": {k: round(v, 1) for k, v in filled.seconds.items()},
                    "database_mb": round(
                        await conn.fetchval("SELECT pg_database_size(current_database())") / MB
                    ),
                    "messages_table_mb": round(
                        await conn.fetchval("SELECT pg_total_relation_size('messages')") / MB
                    ),
                }
                say(f"fill done in {filled.seconds['total']:.0f} s; timing queries")
                result["queries"] = await size.run_queries(
                    conn, filled, args.query_runs, args.query_budget, args.seed
                )
            finally:
                await conn.close()
            say("queries done; restarting the bridge on the filled database")
            result["startup"] = await stack.measure_restart(filled.roster)
            result["startup"]["agents_in_config"] = len(load_config(stack.config).roster.agents)
            say("ingest at this size")
            result["ingest"] = await measure_ingest(args, pg, stack, "clone", wl)
        else:
            result["ingest"] = await measure_ingest(args, pg, stack, "fresh", wl, sealer)
    except Exception:
        if stack is not None and stack.bridge is not None:
            # The temp dir goes with the run: what the bridge said is kept here.
            say(f"the run failed; the bridge's last output:\n{stack.bridge.tail(120)}")
        raise
    finally:
        if stack is not None:
            await stack.stop()
        if nats_server is not None:
            await nats_server.stop()
        await pg.stop(args.keep)
    return result


def plan_word(check: dict[str, Any]) -> str:
    if check["seq_scan"]:
        return "SEQ SCAN"
    if check["sorts_all_matches"]:
        return "SORTS ALL MATCHING ROWS"
    return "index scan" if check["index_scan"] else "no seq scan"


def report(result: dict[str, Any], args: argparse.Namespace) -> None:
    r = result["ingest"]
    pgs = result["postgres"]
    print(
        f"\ndaarion_bridge {result['code']['commit']}"
        f"{' (modified)' if result['code']['daarion_bridge_modified'] else ''} "
        f"ingest benchmark ({result['mode']} mode, seed {result['seed']}, "
        f"{result['machine']['cpus']} CPUs, PostgreSQL {pgs['server_version']} "
        f"{'embedded' if pgs['embedded'] else 'external'}, shared_buffers "
        f"{pgs['shared_buffers']}, synchronous_commit {pgs['synchronous_commit']}, "
        f"NATS {'on: events through the outbox' if result.get('nats') else 'off'})\n"
    )
    if result["mode"] == "size":
        start = result["startup"]
        print(
            f"Start-up on the filled database: {start['spawn_to_ready_s']:.2f} s from spawn "
            f"to /ready, {start['bridge_ready_s']:.2f} s by the bridge's own log "
            f"({start['agents_in_config']:,} agents in its config)\n"
        )
        fill = result["fill"]
        print(
            table(
                [(k, f"{v:,}") for k, v in fill["rows"].items()]
                + [(f"{k} s", v) for k, v in fill["seconds"].items()]
                + [
                    ("database MB", fill["database_mb"]),
                    ("messages MB", fill["messages_table_mb"]),
                ],
                "Fill",
            )
        )
        print()
        qrows = []
        for name, q in result["queries"].items():
            c = q["custom_plan_timing"]
            qrows.append(
                (
                    name,
                    f"prepared p50 {q['p50_ms']:.3f} / p99 {q['p99_ms']:.3f} ms "
                    f"(mean {q['mean_ms']:.2f}, {q['runs']} runs, {q['rows_mean']:.0f} rows); "
                    f"custom plans p50 {c['p50_ms']:.3f} / p99 {c['p99_ms']:.3f} ms",
                )
            )
            qrows.append(
                (
                    "",
                    f"plan: custom {plan_word(q['custom_plan'])}, "
                    f"generic {plan_word(q['generic_plan'])}",
                )
            )
        print(table(qrows, "Queries (client-side, asyncpg, 1 connection)"))
        for name, q in result["queries"].items():
            print(f"\nEXPLAIN (ANALYZE, BUFFERS) {name}, custom plan:\n{q['explain_custom']}")
            print(f"\n{name}, generic plan (prepared statement):\n{q['explain_generic']}")
        print()
    print(ingest_table(r, "Ingest" + (" at size" if result["mode"] == "size" else "")))
    if "encrypted" in r:
        print()
        print(table(encrypted.rows(r["encrypted"], r), "Encrypted beside plain (same run)"))
    print()
    # the JSON line: last, and without the long EXPLAIN texts' line breaks
    print(json.dumps(result, separators=(",", ":"), default=str))


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    # `timeout`, CI and process managers stop a run with SIGTERM, which would end the
    # process on the spot and leave the embedded PostgreSQL (a daemon, not our child) and
    # the work dir behind. Taken as Ctrl-C, it cancels the run, whose cleanup then runs.
    signal.signal(signal.SIGTERM, lambda *_: signal.raise_signal(signal.SIGINT))
    try:
        result = asyncio.run(main_async(args))
    except KeyboardInterrupt:
        say("stopped; the processes and the work dir of the run are gone")
        raise SystemExit(130) from None
    result["args"] = vars(args)
    if code_version() != result["code"]:
        result["code"]["changed_during_run"] = code_version()
    report(result, args)
    sys.stdout.flush()


if __name__ == "__main__":
    main()
