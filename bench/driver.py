"""Sends transactions to the bridge exactly as Synapse does: PUT, Bearer hs_token, JSON
body, one keep-alive connection, one transaction in flight, the next only after a 200."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence

import aiohttp

from .workload import Txn

PATH = "/_matrix/app/v1/transactions/"


def percentile(values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile (p in 0..100) of unsorted values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[rank - 1]


def ms(seconds: float) -> float:
    return round(seconds * 1000, 3)


def latency(values: list[float]) -> dict[str, float]:
    return {
        "p50_ms": ms(percentile(values, 50)),
        "p95_ms": ms(percentile(values, 95)),
        "p99_ms": ms(percentile(values, 99)),
        "max_ms": ms(max(values)),
        "mean_ms": ms(sum(values) / len(values)),
    }


class Driver:
    def __init__(self, base_url: str, hs_token: str) -> None:
        self.base_url = base_url
        self.headers = {
            "Authorization": f"Bearer {hs_token}",
            "Content-Type": "application/json",
        }
        self.session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> Driver:
        self.session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=1),  # one connection, reused
            timeout=aiohttp.ClientTimeout(total=300),
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.session is not None
        await self.session.close()

    async def send(
        self, txns: Sequence[Txn], progress: Callable[[int], None] | None = None
    ) -> list[float]:
        """Latency of each transaction in seconds: from sending the PUT to the 200's body."""
        assert self.session is not None
        latencies: list[float] = []
        put = self.session.put
        for i, txn in enumerate(txns):
            t0 = time.perf_counter()
            async with put(
                self.base_url + PATH + txn.txn_id, data=txn.body, headers=self.headers
            ) as r:
                body = await r.read()
                status = r.status
            latencies.append(time.perf_counter() - t0)
            if status != 200:
                raise RuntimeError(
                    f"transaction {txn.txn_id}: HTTP {status} {body[:300]!r}; see the bridge log"
                )
            if progress is not None:
                progress(i + 1)
        return latencies

    async def http_baseline(self, n: int = 300) -> list[float]:
        """Round trips of GET /_matrix/mau/live: what HTTP alone costs on this machine."""
        assert self.session is not None
        out = []
        for _ in range(n):
            t0 = time.perf_counter()
            async with self.session.get(self.base_url + "/_matrix/mau/live") as r:
                await r.read()
            out.append(time.perf_counter() - t0)
        return out
