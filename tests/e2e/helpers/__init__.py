"""Helpers for the end-to-end tests, by concern:

* ``daarion_bridge.devtools``: the bridge process and its config files (``bridge``),
  people acting as Element (``people``), scratch databases (``database``), the child
  process harness (``process``); the benchmark uses them too;
* ``stack``: a Synapse with a bridge config and registration of its own;
* ``own``: a module's own index, bridge and NATS, and the fixture factory for them;
* ``index``: the index read back and compared with the rooms' history;
* ``transactions``: transactions pushed by hand, a proxy recording Synapse's pushes;
* ``synapse_side``: what Synapse itself holds;
* ``bridge_log``: what the bridge logged;
* ``stream``: what the bridge published to a JetStream stream.

Every name test modules import from ``tests.e2e.helpers`` is re-exported here.
"""

from __future__ import annotations

from functools import partial

from daarion_bridge.devtools.bridge import (
    REPO_ROOT,
    BridgeProcess,
    CliResult,
    derive_config,
    dump_yaml,
    file_logging,
    load_yaml,
    run_cli,
    write_bridge_config,
)
from daarion_bridge.devtools.bridge import child_env as _child_env
from daarion_bridge.devtools.database import create_database
from daarion_bridge.devtools.nats import LocalNats
from daarion_bridge.devtools.people import (
    MatrixError,
    Person,
    channel_row,
    open_channel,
    q,
    wait_for,
)

from .bridge_log import CATCH_UP_LINE, CatchUpRound, catch_up_rounds
from .index import (
    DELETED,
    EPOCH,
    IndexReport,
    assert_index_matches_history,
    assert_report_clean,
    datetime_to_ms,
    fmt_seconds,
    index_report,
    is_redacted,
    member_row,
    replaced_by,
    ts_to_datetime,
    user_row,
    wait_indexed,
)
from .own import (
    OwnFixtures,
    OwnIndex,
    index_pool,
    own_fixtures,
    own_index,
    running_bridge,
    running_nats,
)
from .stack import E2E, e2e_stack
from .stream import stream_events
from .synapse_side import explain_missing, synapse_unsent_transactions
from .transactions import RecordingProxy, hs_token_of, http_status, put_transaction

# The tests' bridge ignores DAARION_BRIDGE_* overrides: the test configs say it all.
child_env = partial(_child_env, strip_overrides=True)

__all__ = [
    "CATCH_UP_LINE",
    "DELETED",
    "E2E",
    "EPOCH",
    "REPO_ROOT",
    "BridgeProcess",
    "CatchUpRound",
    "CliResult",
    "IndexReport",
    "LocalNats",
    "MatrixError",
    "OwnFixtures",
    "OwnIndex",
    "Person",
    "RecordingProxy",
    "assert_index_matches_history",
    "assert_report_clean",
    "catch_up_rounds",
    "channel_row",
    "child_env",
    "create_database",
    "datetime_to_ms",
    "derive_config",
    "dump_yaml",
    "e2e_stack",
    "explain_missing",
    "file_logging",
    "fmt_seconds",
    "hs_token_of",
    "http_status",
    "index_pool",
    "index_report",
    "is_redacted",
    "load_yaml",
    "member_row",
    "open_channel",
    "own_fixtures",
    "own_index",
    "put_transaction",
    "q",
    "replaced_by",
    "run_cli",
    "running_bridge",
    "running_nats",
    "stream_events",
    "synapse_unsent_transactions",
    "ts_to_datetime",
    "user_row",
    "wait_for",
    "wait_indexed",
    "write_bridge_config",
]
