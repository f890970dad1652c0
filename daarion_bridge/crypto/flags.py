"""Does the homeserver send what encryption needs? Synapse sends to-device messages,
one-time-key counts and device lists to an appservice only with two experimental flags
in homeserver.yaml and two keys in the registration; without them nothing fails, room
keys just never come. What the transactions show is watched here (pure: no I/O), and a
probe, a to-device message the bridge sends its own bot device, settles the rest.

Signs, each one free of false alarms on its own:
- a transaction without the to-device key at all: Synapse adds it (even empty) for
  every appservice whose registration asks for ephemeral events, resends included;
- a transaction carrying a to-device message for one of the bridge's devices but no
  key count for that device: only a live transaction (never a resend) carries to-device
  messages, and a live one counts the keys of every recipient when MSC3202 is on;
- the probes lost: PROBES of them, each waited for, none came, and either no key count
  ever came, or the last was sent after a live transaction (one with key counts: the
  homeserver was sending to the bridge, not in its recovery, where it drops to-device
  messages) and another live one came after it.

A start into a long recovery of Synapse's (a backlog it resends without counts) can
look like the flags missing; a key count or a probe that comes later clears it."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

TO_DEVICE_KEYS = ("de.sorunome.msc2409.to_device", "to_device")
COUNT_KEYS = ("org.matrix.msc3202.device_one_time_keys_count", "device_one_time_keys_count")
PROBE = "org.daarion.probe"
PROBES = 2  # lost before the homeserver is said to send no to-device messages
MAX_PROBES = 4  # sent at most, while what was seen is not conclusive
PROBE_WAIT = 20.0  # seconds each probe is waited for (Synapse delivers in milliseconds)

FIX = (
    "add to homeserver.yaml `experimental_features: {msc2409_to_device_messages_enabled: "
    "true, msc3202_transaction_extensions: true}` and to the registration "
    "`receive_ephemeral: true`, `de.sorunome.msc2409.push_ephemeral: true`, "
    "`org.matrix.msc3202: true` (`daarion-bridge -g` writes these), then restart Synapse"
)


@dataclass
class FlagWatch:
    """What the transactions showed so far."""

    transactions: int = 0
    counts_seen: bool = False
    no_to_device_key: bool = False  # a transaction came without it
    to_device_without_counts: bool = False
    probes_sent: int = 0
    probe_came: bool = False
    live_after_probe: bool = False  # a transaction with key counts after the last probe
    sent_when_live: bool = False  # the last probe went after a transaction with counts
    nonces: set[str] = field(default_factory=set)

    def saw(self, body: Mapping[str, Any], devices: Mapping[str, str]) -> None:
        """One transaction as Synapse sent it; `devices`: user id -> device id of the
        bridge's devices."""
        self.transactions += 1
        to_device = _first(body, TO_DEVICE_KEYS)
        if to_device is None:
            self.no_to_device_key = True
        counts = _first(body, COUNT_KEYS)
        counted = _counted(counts, devices)
        if counted:
            self.counts_seen = True
            if self.probes_sent:
                self.live_after_probe = True
        for raw in to_device if isinstance(to_device, list) else []:
            if not isinstance(raw, dict):
                continue
            user, device = raw.get("to_user_id"), raw.get("to_device_id")
            if devices.get(str(user)) != device:
                continue
            if (user, device) not in counted:
                self.to_device_without_counts = True
            content = raw.get("content")
            nonce = content.get("nonce") if isinstance(content, dict) else None
            if raw.get("type") == PROBE and nonce in self.nonces:
                self.probe_came = True

    def probe_sent(self, nonce: str) -> None:
        self.nonces.add(nonce)
        self.probes_sent += 1
        self.live_after_probe = False
        self.sent_when_live = self.counts_seen

    def missing(self) -> list[str]:
        """What the homeserver was seen not to send; empty while nothing is known."""
        found = []
        if self.no_to_device_key:
            found.append("no to-device field in its transactions (registration)")
        elif (
            self.probes_sent >= PROBES
            and not self.probe_came
            and ((self.sent_when_live and self.live_after_probe) or not self.counts_seen)
        ):
            found.append("no to-device messages (MSC2409)")
        probes_lost = self.probes_sent >= PROBES and not self.probe_came
        if self.to_device_without_counts or (probes_lost and not self.counts_seen):
            found.append("no one-time-key counts (MSC3202)")
        return found

    def warning(self) -> str | None:
        """The one line to log, None while nothing is missing."""
        missing = self.missing()
        if not missing:
            return None
        return (
            "Encryption cannot work: the homeserver sends the bridge "
            + " and ".join(missing)
            + ", so room keys never reach the agents' devices; "
            + FIX
        )


def _first(body: Mapping[str, Any], keys: Iterable[str]) -> Any:
    for key in keys:
        if key in body:
            return body[key]
    return None


def _counted(counts: Any, devices: Mapping[str, str]) -> set[tuple[str, str]]:
    """(user, device) of the bridge's devices the transaction counts keys for."""
    if not isinstance(counts, dict):
        return set()
    found = set()
    for user, device in devices.items():
        by_device = counts.get(user)
        if isinstance(by_device, dict) and isinstance(by_device.get(device), dict):
            found.add((user, device))
    return found
