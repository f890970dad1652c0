"""`bench.ingest --encrypted`, small: the real bridge decrypts every Megolm message of
the encrypted phase on arrival, with the room keys the benchmark sent to its devices
over Olm (the run itself fails when a message waits for its key or cannot be
decrypted); its figures sit beside the plain phase's."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from daarion_bridge.devtools.process import run_to_end

REPO = Path(__file__).resolve().parents[2]


async def test_the_encrypted_phase_is_decrypted_by_the_bridge() -> None:
    run = await run_to_end(
        [
            sys.executable,
            "-m",
            "bench.ingest",
            "--encrypted",
            *("--events", "600", "--batch", "50", "--warmup", "200", "--single", "10"),
            *("--channels", "6", "--senders", "40", "--room-agents", "4"),
        ],
        cwd=REPO,
        timeout=600,
    )
    assert run.returncode == 0, run.stderr[-4000:]
    ingest = json.loads(run.stdout.strip().splitlines()[-1])["ingest"]
    enc = ingest["encrypted"]
    assert enc["events"] == ingest["events"] == 600
    assert enc["transactions"] == ingest["transactions"] == 12  # the same batches
    assert enc["encrypted_messages"] > 300  # people's messages and edits: most events
    assert enc["room_keys"] >= enc["megolm_sessions"] > 0  # each to the bot, and agents
    assert enc["decrypt_failures"] == 0
    assert enc["waiting_for_keys"] == 0
    assert enc["bridge_cpu_us_per_event"] > 0
    assert enc["decryption_cost"]["bridge_cpu_us_per_encrypted_message"] is not None
    assert "Encrypted beside plain" in run.stdout
