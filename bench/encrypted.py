"""The encrypted phase of ``--encrypted``: the same mix, batch and rooms as the measured
plain phase, its people's messages Megolm-encrypted (see e2ee.py), sent to the same
bridge right after the plain phases; and what decryption costs, per encrypted message,
against the plain phase of the same run."""

from __future__ import annotations

import time
from dataclasses import asdict
from typing import Any

import asyncpg

from .driver import Driver, latency, ms
from .e2ee import Counts
from .harness import CpuMeter, Stack, db_stats, rss, say, wait_stats_flushed
from .workload import Phase

MB = 1024 * 1024
FAILURES = "daarion_bridge_decrypt_failures_total"


def _failures(metrics: dict[str, float]) -> float:
    return sum(v for k, v in metrics.items() if k.startswith(FAILURES + "{"))


def _server_mean_ms(m0: dict[str, float], m1: dict[str, float]) -> float | None:
    key = "daarion_bridge_transaction_seconds"
    n = m1.get(key + "_count", 0.0) - m0.get(key + "_count", 0.0)
    return ms((m1.get(key + "_sum", 0.0) - m0.get(key + "_sum", 0.0)) / n) if n else None


async def measure(
    driver: Driver,
    stack: Stack,
    conn: asyncpg.Connection,
    pm: int | None,
    warm: Phase,
    main: Phase,
    counts: Counts,
    per_txn: list[tuple[int, int]],
    plain: dict[str, Any],
) -> dict[str, Any]:
    """Warm-up (its own sessions and Olm sessions made), then the measured encrypted
    phase. `counts`: what the sealer made for `main`, `per_txn` per transaction
    (messages encrypted, room keys); `plain`: the plain phase's figures. Fails when any
    message was not decrypted on arrival."""
    t = time.perf_counter()
    await driver.send(warm.txns)
    say(f"encrypted warm-up: {warm.events:,} events in {time.perf_counter() - t:.1f} s")
    await wait_stats_flushed(conn)
    stats0 = await db_stats(conn)
    metrics0 = await stack.metrics()
    cpu = CpuMeter(stack.bridge_pid, pm)
    cpu.start()
    t0 = time.perf_counter()
    lat = await driver.send(main.txns)
    elapsed = time.perf_counter() - t0
    cpus = cpu.stop()
    metrics1 = await stack.metrics()
    say(f"encrypted: {main.events:,} events in {elapsed:.1f} s")
    await wait_stats_flushed(conn)
    stats1 = await db_stats(conn)
    delta = {k: stats1[k] - stats0[k] for k in stats0}

    ids = list(main.message_txn)
    n_msg = await conn.fetchval(
        "SELECT count(*) FROM messages WHERE matrix_event_id = ANY($1::text[])", ids
    )
    # people's messages (agents' answers go plain) that were not redacted later
    kept = [i for i in ids if i not in main.redacted]
    unsealed = await conn.fetchval(
        "SELECT count(*) FROM messages WHERE matrix_event_id = ANY($1::text[]) "
        "AND sender_agent_id IS NULL AND content_preview <> '[encrypted]'",
        kept,
    )
    waiting = await conn.fetchval("SELECT count(*) FROM bridge_encrypted_waiting")
    failures = _failures(metrics1) - _failures(metrics0)
    if n_msg != len(ids) or unsealed or waiting or failures:
        raise RuntimeError(
            f"encrypted phase: bridge wrote {n_msg} of {len(ids)} messages, {unsealed} "
            f"people's not as [encrypted]; {failures:.0f} not decrypted on arrival, "
            f"{waiting} waiting for their key"
        )

    eps = main.events / elapsed
    bridge_us = cpus["bridge_cpu_s"] / main.events * 1e6
    pg_s = cpus["postgres_cpu_s"]
    pg_us = pg_s / main.events * 1e6 if pg_s is not None else None
    pm_ = plain["model"]
    n = counts.encrypted

    def extra(enc_total: float, plain_per_event: float | None) -> float | None:
        """Per encrypted message: what the phase cost beyond the same events plain."""
        if plain_per_event is None:
            return None
        return round((enc_total - plain_per_event * main.events) / n, 1) if n else None

    return {
        "events": main.events,
        "transactions": len(main.txns),
        "encrypted_messages": n,
        "room_keys": counts.room_keys,
        "megolm_sessions": counts.megolm_sessions,
        "olm_sessions": counts.olm_sessions,
        "json_mb": round(main.body_bytes / MB, 2),
        "seconds": round(elapsed, 3),
        "events_per_s": round(eps, 1),
        "txn_latency": latency(lat),
        "server_side_txn_mean_ms": _server_mean_ms(metrics0, metrics1),
        "bridge_cpu_us_per_event": round(bridge_us, 1),
        "postgres_cpu_us_per_event": round(pg_us, 1) if pg_us is not None else None,
        "cpu_s": {k: (round(v, 2) if v is not None else None) for k, v in cpus.items()},
        "bridge_rss_mb_end": round(rss(stack.bridge_pid)["rss"] / MB, 1),
        "db_delta": delta,
        "decrypt_failures": failures,
        "waiting_for_keys": waiting,
        "warmup": {"events": warm.events},
        "decryption_cost": {
            "events_per_s_over_plain": round(eps / plain["events_per_s"], 3),
            "bridge_cpu_us_per_encrypted_message": extra(
                cpus["bridge_cpu_s"] * 1e6, pm_["bridge_cpu_us_per_event"]
            ),
            "postgres_cpu_us_per_encrypted_message": extra(
                pg_s * 1e6 if pg_s is not None else 0.0, pm_["postgres_cpu_us_per_event"]
            ),
            "wall_ms_per_encrypted_message": (
                round((elapsed - main.events / plain["events_per_s"]) * 1000 / n, 3) if n else None
            ),
            "room_keys_per_encrypted_message": round(counts.room_keys / n, 3) if n else None,
            # the crypto store's writes commit on their own, outside the transaction's
            "commits_per_encrypted_message": (
                round((delta["xact_commit"] - plain["db_delta"]["xact_commit"]) / n, 2)
                if n
                else None
            ),
            **split(lat, per_txn, plain["txn_latency"]["mean_ms"]),
        },
    }


def split(
    latencies: list[float], per_txn: list[tuple[int, int]], plain_mean_ms: float
) -> dict[str, float | None]:
    """Each transaction's latency beyond the plain phase's mean, fitted (least squares,
    no intercept: the plain mean holds the rest) as ms per message decrypted + ms per
    room key taken in: what a message costs once its session is there, and a key."""
    smm = smk = skk = sdm = sdk = 0.0
    for latency_s, (m, k) in zip(latencies, per_txn, strict=True):
        d = latency_s * 1000 - plain_mean_ms
        smm, smk, skk = smm + m * m, smk + m * k, skk + k * k
        sdm, sdk = sdm + d * m, sdk + d * k
    det = smm * skk - smk * smk
    if not det:
        return {"fit_ms_per_decrypted_message": None, "fit_ms_per_room_key": None}
    return {
        "fit_ms_per_decrypted_message": round((sdm * skk - sdk * smk) / det, 3),
        "fit_ms_per_room_key": round((smm * sdk - smk * sdm) / det, 3),
    }


def counts_between(before: Counts, after: Counts) -> Counts:
    a, b = asdict(after), asdict(before)
    return Counts(**{k: a[k] - b[k] for k in a})


def rows(enc: dict[str, Any], plain: dict[str, Any]) -> list[tuple[str, Any]]:
    """The table's lines: the encrypted phase beside the plain one."""
    cost = enc["decryption_cost"]
    lat = enc["txn_latency"]
    return [
        (
            "encrypted: events / messages encrypted",
            f"{enc['events']:,} / {enc['encrypted_messages']:,} "
            f"({enc['room_keys']:,} room keys to-device, {enc['megolm_sessions']:,} sessions)",
        ),
        (
            "events/s: plain / encrypted",
            f"{plain['events_per_s']:,.0f} / {enc['events_per_s']:,.0f} "
            f"({cost['events_per_s_over_plain']} of plain)",
        ),
        (
            f"encrypted txn latency p50/p99 ({plain['batch']} ev)",
            f"{lat['p50_ms']:.2f} / {lat['p99_ms']:.2f} ms "
            f"(server side {enc['server_side_txn_mean_ms']} ms mean)",
        ),
        (
            "CPU per event, bridge: plain / encrypted",
            f"{plain['model']['bridge_cpu_us_per_event']} / {enc['bridge_cpu_us_per_event']} us",
        ),
        (
            "CPU per event, postgres: plain / encrypted",
            f"{plain['model']['postgres_cpu_us_per_event']} / "
            f"{enc['postgres_cpu_us_per_event']} us",
        ),
        (
            "decryption per encrypted message",
            f"bridge {cost['bridge_cpu_us_per_encrypted_message']} us + postgres "
            f"{cost['postgres_cpu_us_per_encrypted_message']} us CPU, "
            f"{cost['wall_ms_per_encrypted_message']} ms wall (room keys included)",
        ),
        (
            "  fitted per transaction: message / room key",
            f"{cost['fit_ms_per_decrypted_message']} / {cost['fit_ms_per_room_key']} ms wall",
        ),
        (
            "  commits per encrypted message (beyond plain)",
            f"{cost['commits_per_encrypted_message']} (the crypto store's own)",
        ),
        (
            "  decrypted on arrival / waiting for keys",
            f"all ({enc['decrypt_failures']:.0f} failures) / {enc['waiting_for_keys']}",
        ),
    ]
