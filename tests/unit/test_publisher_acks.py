"""The publisher's reading of JetStream's answers to one batch of publishes."""

from __future__ import annotations

import nats.js.errors
from nats.aio.msg import Msg

from daarion_bridge.bus.publisher import Acks, ack_error


def answer(data: bytes, headers: dict[str, str] | None = None) -> Msg:
    return Msg(_client=None, subject="_INBOX.x.1-0", data=data, headers=headers)  # type: ignore[arg-type]


def test_stored_and_duplicate_are_acks_errors_are_not() -> None:
    assert ack_error(answer(b'{"stream":"S","seq":7}')) is None
    assert ack_error(answer(b'{"stream":"S","seq":7,"duplicate":true}')) is None
    refused = ack_error(answer(b'{"error":{"code":503,"err_code":10077,"description":"full"}}'))
    assert isinstance(refused, nats.js.errors.ServiceUnavailableError)
    missing = ack_error(answer(b"", {"Status": "503"}))
    assert isinstance(missing, nats.js.errors.NoStreamResponseError)
    odd = ack_error(answer(b'{"error": "no code"}'))
    assert isinstance(odd, nats.js.errors.APIError)
    assert isinstance(ack_error(answer(b'"error" but not JSON')), nats.js.errors.Error)


def test_acked_run_stops_at_the_first_refused_or_unanswered() -> None:
    acks = Acks("1", 4)
    acks.record(1, None)
    acks.record(0, None)
    acks.record(3, None)
    assert acks.acked_run() == (2, None) and not acks.complete.is_set()
    error = nats.js.errors.ServiceUnavailableError()
    acks.record(2, error)
    acks.record(2, None)  # a second answer for one position changes nothing
    acks.record(9, None)  # nor does one outside the batch
    assert acks.complete.is_set()
    assert acks.acked_run() == (2, error)


def test_all_acked() -> None:
    acks = Acks("2", 2)
    acks.record(0, None)
    acks.record(1, None)
    assert acks.acked_run() == (2, None) and acks.complete.is_set()
