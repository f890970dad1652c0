"""Whether the homeserver sends what encryption needs, decided from its transactions and
the bridge's probes (daarion_bridge/crypto/flags.py): said when a sign is sure, never
on what a resend or a quiet homeserver looks like."""

from __future__ import annotations

from typing import Any

from daarion_bridge.crypto.flags import PROBE, PROBES, FlagWatch

BOT, DEVICE = "@daarion:x", "DAARIONBOT"
DEVICES = {BOT: DEVICE, "@agent-a:x": "DAARIONA"}
TO_DEVICE = "de.sorunome.msc2409.to_device"
COUNTS = "org.matrix.msc3202.device_one_time_keys_count"


def body(to_device: Any = (), counts: bool = True, **more: Any) -> dict[str, Any]:
    b: dict[str, Any] = {"events": [], TO_DEVICE: list(to_device), **more}
    if counts:
        b[COUNTS] = {BOT: {DEVICE: {"signed_curve25519": 50}}}
    return b


def probe(nonce: str) -> dict[str, Any]:
    return {"type": PROBE, "to_user_id": BOT, "to_device_id": DEVICE, "content": {"nonce": nonce}}


def lose_probes(watch: FlagWatch) -> None:
    for n in range(PROBES):
        watch.probe_sent(f"n{n}")


def test_flags_on_nothing_is_said() -> None:
    watch = FlagWatch()
    watch.saw(body(), DEVICES)
    watch.probe_sent("n0")
    watch.saw(body([probe("n0")]), DEVICES)
    assert watch.missing() == [] and watch.warning() is None
    assert watch.counts_seen and watch.probe_came


def test_a_resend_without_counts_or_to_device_is_no_sign() -> None:
    watch = FlagWatch()
    watch.saw(body(counts=False), DEVICES)  # as Synapse's recoverer sends it
    assert watch.missing() == []


def test_before_the_probes_are_out_nothing_is_known() -> None:
    watch = FlagWatch()
    watch.saw(body(counts=False), DEVICES)
    watch.probe_sent("n0")
    assert watch.missing() == []


def test_no_flags_at_all_names_both_and_the_fix() -> None:
    watch = FlagWatch()
    watch.saw(body(counts=False), DEVICES)
    lose_probes(watch)
    assert watch.missing() == [
        "no to-device messages (MSC2409)",
        "no one-time-key counts (MSC3202)",
    ]
    line = watch.warning()
    assert line is not None and "\n" not in line
    for needed in (
        "msc2409_to_device_messages_enabled: true",
        "msc3202_transaction_extensions: true",
        "receive_ephemeral: true",
        "de.sorunome.msc2409.push_ephemeral: true",
        "org.matrix.msc3202: true",
    ):
        assert needed in line


def test_probes_lost_while_counts_come_but_no_live_transaction_since() -> None:
    """Counts came once (MSC3202 on), the probes went missing, and nothing live came
    after: the homeserver may be resending a backlog. Not said yet."""
    watch = FlagWatch()
    watch.saw(body(), DEVICES)
    lose_probes(watch)
    assert watch.missing() == []
    watch.saw(body(), DEVICES)  # live (it counts keys), yet no probe in it
    assert watch.missing() == ["no to-device messages (MSC2409)"]


def test_a_probe_that_comes_late_clears_it() -> None:
    watch = FlagWatch()
    lose_probes(watch)
    watch.saw(body([probe("n1")]), DEVICES)
    assert watch.missing() == []


def test_someone_elses_probe_is_not_ours() -> None:
    watch = FlagWatch()
    lose_probes(watch)
    watch.saw(body([probe("forged")]), DEVICES)
    assert not watch.probe_came


def test_to_device_for_our_device_without_its_count_means_no_msc3202() -> None:
    watch = FlagWatch()
    key = {"type": "m.room.encrypted", "to_user_id": "@agent-a:x", "to_device_id": "DAARIONA"}
    watch.saw(body([key]), DEVICES)  # counts for the bot only, none for the agent's device
    assert watch.missing() == ["no one-time-key counts (MSC3202)"]


def test_to_device_for_another_device_is_no_sign() -> None:
    watch = FlagWatch()
    other = {"type": "m.room.encrypted", "to_user_id": "@agent-a:x", "to_device_id": "OLD"}
    watch.saw(body([other], counts=False), DEVICES)
    assert watch.missing() == []


def test_no_to_device_field_means_the_registration_lacks_ephemeral() -> None:
    watch = FlagWatch()
    watch.saw({"events": []}, DEVICES)
    assert watch.missing() == ["no to-device field in its transactions (registration)"]


def test_probes_sent_before_anything_live_came_prove_nothing_once_counts_come() -> None:
    """At a start into Synapse's recovery the probes may be dropped; the live
    transactions (with counts) that follow show it works, the probes lost say nothing."""
    watch = FlagWatch()
    watch.saw(body(counts=False), DEVICES)  # a resend
    lose_probes(watch)
    watch.saw(body(), DEVICES)
    assert watch.missing() == []
