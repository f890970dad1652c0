"""Prometheus metrics. Defined once per process; served only when metrics.enabled."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram, start_http_server

EVENTS = Counter(
    "daarion_bridge_events_total",
    "Room events handled, by operation and outcome",
    ["kind", "outcome"],
)
TRANSACTIONS = Counter(
    "daarion_bridge_transactions_total", "Synapse transactions, by outcome", ["outcome"]
)
TRANSACTION_SECONDS = Histogram(
    "daarion_bridge_transaction_seconds",
    "Time from receiving a transaction to its commit",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
DEAD_LETTERS = Counter("daarion_bridge_dead_letters_total", "Events moved to the dead-letter table")
DATABASE_ERRORS = Counter(
    "daarion_bridge_database_errors_total", "Transactions refused because the database failed"
)
DECRYPT_FAILURES = Counter(
    "daarion_bridge_decrypt_failures_total",
    "Encrypted room messages not decrypted on arrival: no_key (it waits for its room key) "
    "or error (it cannot be decrypted)",
    ["reason"],
)
WAITING_FOR_KEYS = Gauge(
    "daarion_bridge_messages_waiting_for_keys", "Encrypted messages waiting for their room key"
)
ONE_TIME_KEYS = Gauge(
    "daarion_bridge_one_time_keys",
    "Unused signed_curve25519 one-time keys of each bridge device, as Synapse last said",
    ["user_id", "device_id"],
)

BACKFILLED_EVENTS = Counter(
    "daarion_bridge_backfilled_events_total",
    "Events of rooms' earlier history fed through the ingest path when they became channels",
)
BACKFILLS = Counter(
    "daarion_bridge_backfills_total",
    "Rooms' earlier history read back, by outcome (done, failed, off)",
    ["outcome"],
)


def serve(host: str, port: int):  # noqa: ANN201 (prometheus_client's server type)
    server, _thread = start_http_server(port, addr=host)
    return server
