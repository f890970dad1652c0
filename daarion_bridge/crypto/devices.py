"""One user's device: created on the homeserver as the appservice, its Olm account in
the crypto store, its keys uploaded and kept topped up."""

from __future__ import annotations

import logging
import secrets
import string
from typing import cast

import aiohttp
from mautrix.api import HTTPAPI, Method, Path
from mautrix.client import Client
from mautrix.crypto import OlmMachine, StateStore
from mautrix.crypto.cross_signing_key import CrossSigningSeeds
from mautrix.crypto.signature import sign_olm
from mautrix.types import DeviceID, UserID
from mautrix.util.async_db import Database
from mautrix.util.logging import TraceLogger
from yarl import URL

from .store import BridgeMachine, CachedCryptoStore, CryptoCache

log = logging.getLogger("daarion.crypto")

DEVICE_NAME = "DAARION bridge"
DEVICE_PREFIX = "DAARION"


def user_api(
    user_id: str, *, homeserver: str, as_token: str, http: aiohttp.ClientSession
) -> HTTPAPI:
    """The client API as this user (the appservice masquerading)."""
    return HTTPAPI(
        URL(homeserver),
        as_token,
        client_session=http,
        log=cast(TraceLogger, logging.getLogger("daarion.crypto.http")),
        as_user_id=UserID(user_id),
    )


def _new_device_id() -> str:
    return DEVICE_PREFIX + "".join(secrets.choice(string.ascii_uppercase) for _ in range(8))


async def open_device(
    user_id: str,
    *,
    homeserver: str,
    as_token: str,
    http: aiohttp.ClientSession,
    db: Database,
    pickle_key: str,
    rooms: StateStore,
    cache: CryptoCache,
) -> OlmMachine:
    """The user's machine, its device created and its keys uploaded the first time.

    The store's account_id is the user id: the puppets share the crypto tables, and
    `cache` (store.py)."""
    store = CachedCryptoStore(user_id, pickle_key, db, cache)
    await store.open()
    device_id = await store.get_device_id()
    api = user_api(user_id, homeserver=homeserver, as_token=as_token, http=http)
    if not device_id:  # the store says "" before it has one
        device_id = DeviceID(_new_device_id())
        # Synapse creates the device for an appservice user (MSC4190's PUT; the
        # appservice may always do it). Masquerading with device_id needs it to exist.
        await api.request(
            Method.PUT,
            Path.v3.devices[device_id],
            {"display_name": DEVICE_NAME},
        )
    api.as_device_id = device_id
    client = Client(mxid=UserID(user_id), device_id=device_id, api=api)
    machine = BridgeMachine(
        client,
        store,
        rooms,
        log=cast(TraceLogger, logging.getLogger("daarion.crypto.olm")),
    )
    await machine.load()
    if not await store.get_device_id():
        await store.put_device_id(device_id)
    assert machine.account is not None  # load made or read it
    if not machine.account.shared:
        await machine.share_keys()
        log.info("Device %s of %s created, its keys uploaded", device_id, user_id)
    return machine


async def cross_sign(machine: OlmMachine) -> bool:
    """Give the user cross-signing keys and sign its device with them, once.

    The private keys are not kept: the device is signed for good, and a new device
    would need new keys (which an appservice user may upload without UIA)."""
    if await machine.crypto_store.get_cross_signing_keys(machine.client.mxid):
        return False
    seeds = CrossSigningSeeds.generate()
    machine._cross_signing_private_keys = seeds.to_keys()
    await machine._publish_cross_signing_keys(seeds.to_keys())
    await machine.sign_own_device(machine.own_identity)
    machine._cross_signing_private_keys = None
    return True


async def upload_fallback_key(machine: OlmMachine) -> None:
    """A new fallback key: what a sender uses once the one-time keys ran out."""
    account = machine.account
    assert account is not None  # loaded by open_device
    account.generate_fallback_key()
    keys = account.fallback_key.get("curve25519", {})
    fallback = {}
    for key_id, key in keys.items():
        signed = {"key": key, "fallback": True}
        signature = sign_olm(dict(signed), account)
        mxid, device = machine.client.mxid, machine.client.device_id
        signed["signatures"] = {mxid: {f"ed25519:{device}": signature}}
        fallback[f"signed_curve25519:{key_id}"] = signed
    await machine.client.api.request(Method.POST, Path.v3.keys.upload, {"fallback_keys": fallback})
    account.mark_keys_as_published()
    await machine.crypto_store.put_account(account)
