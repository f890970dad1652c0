"""What Synapse itself holds (its SQLite database), to tell its faults from the bridge's."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable
from pathlib import Path


def synapse_unsent_transactions(synapse_workdir: Path) -> dict[str, tuple[int, str]]:
    """What Synapse (SQLite) holds as appservice transactions not yet completed:
    event id -> (txn id, appservice state). Once traffic has settled, an event found here
    was never pushed: Synapse left its transaction behind (seen when its recoverer
    declares the service up just as a new transaction is stored for a down service)."""
    db = synapse_workdir / "homeserver.db"
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
    try:
        rows = con.execute("SELECT as_id, txn_id, event_ids FROM application_services_txns")
        txns = rows.fetchall()
        states = dict(con.execute("SELECT as_id, state FROM application_services_state"))
    finally:
        con.close()
    return {
        event_id: (txn_id, states.get(as_id) or "up")
        for as_id, txn_id, ids in txns
        for event_id in json.loads(ids)
    }


def explain_missing(missing: Iterable[str], synapse_workdir: Path) -> str:
    """A note for the failure message: which missing events Synapse never pushed."""
    missing = list(missing)
    if not missing:
        return ""
    unsent = synapse_unsent_transactions(synapse_workdir)
    stuck = {i: unsent[i] for i in missing if i in unsent}
    if not stuck:
        return "none of them is in Synapse's unsent appservice transactions"
    parts = [f"{i} in txn {txn} (service {state})" for i, (txn, state) in stuck.items()]
    return (
        f"{len(stuck)} of the {len(missing)} missing never pushed by Synapse: it still holds "
        f"them in unsent appservice transactions: {'; '.join(parts[:5])}"
    )
