"""End-to-end encryption in appservice mode: one device per puppet (and the bot), its
Olm account and sessions in mautrix's crypto store in the bridge's own PostgreSQL, and
the to-device messages, key counts and device lists read from Synapse's transactions
(MSC2409, MSC3202), since an appservice user cannot /sync."""

from .outbound import CannotEncrypt
from .service import Crypto, open_crypto, seal

__all__ = ["CannotEncrypt", "Crypto", "open_crypto", "seal"]
