"""Limits every request meets: a rate per caller and a cap on the request body.

Rate: a token bucket per API key / token subject, or per client address for anonymous callers and for
credentials that do not check out (so guessing keys is limited too). The buckets are rows on the primary
(ops.rate_budgets, migration 016), so a caller's budget is one across every service node and worker.
Each process takes tokens from its row in small batches and spends them locally, so the database sees
one statement per batch, not per request. While the primary cannot be reached the process falls back to
a bucket of its own (the same rate, per process), so a database outage never turns into 429s.

What a request costs fits how clients page: following a `next` link (a keyset `cursor`) costs
GIS_HTTP_CONTINUATION_COST of a token, a new query one token. The client address of an anonymous caller
is the one the trusted proxies (GIS_SERVE_FORWARDED_ALLOW_IPS, services/common/serving.py) report in
X-Forwarded-For; docs/security.md says what the limits protect against.

Body: every request body is capped at GIS_HTTP_MAX_BODY_BYTES, the upload endpoints' at
GIS_HTTP_MAX_UPLOAD_BYTES; a declared Content-Length over the cap is refused before the body is read,
a chunked body as soon as it passes the cap.
"""

import asyncio
import logging
import math
import re
import time
from dataclasses import dataclass

import psycopg
from fastapi import HTTPException, Request
from psycopg_pool import AsyncConnectionPool, PoolTimeout
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gis.features.cql2.complexity import Cql2Limits
from gis.security.settings import HttpSettings
from services.auth import credentials
from services.common.errors import BodyTooLarge, RateLimited
from services.common.state import app_state

LOGGER = logging.getLogger(__name__)

# POST endpoints that take files: overlap-check proposals (multipart, or the file as the body) and process
# execution (files base64-encoded in JSON); and sensor-reading batches (up to 10,000 readings, about 1 MiB).
# Each still applies its own, smaller cap to what it reads.
UPLOAD_PATHS = re.compile(
    r"^/(api/planning/overlap-checks|api/pipeline/sensor-readings|processes/[^/]+/execution|api/deliveries/[^/]+)/?$")
_MAX_BUCKETS = 100_000
# A shared budget's statement may take this long before the process decides on its own bucket instead.
_SHARED_TIMEOUT_S = 0.5
_PRUNE_EVERY_S = 300.0


class RateLimiter:
    """Token buckets by identity: `burst` requests at once, refilled at `rate` per second."""

    def __init__(self, rate: float, burst: int) -> None:
        self.rate = rate
        self.burst = float(burst)
        self._buckets: dict[str, tuple[float, float]] = {}  # identity -> (tokens, when counted)

    def take(self, identity: str, now: float | None = None, cost: float = 1.0) -> float:
        """Takes `cost` tokens: 0.0 if the request may go ahead, else the seconds until it could."""
        if self.rate <= 0:
            return 0.0
        now = time.monotonic() if now is None else now
        tokens, stamp = self._buckets.get(identity, (self.burst, now))
        tokens = min(self.burst, tokens + (now - stamp) * self.rate)
        if tokens >= cost:
            self._remember(identity, tokens - cost, now)
            return 0.0
        self._remember(identity, tokens, now)
        return (cost - tokens) / self.rate

    def _remember(self, identity: str, tokens: float, now: float) -> None:
        if identity not in self._buckets and len(self._buckets) >= _MAX_BUCKETS:
            # Buckets that have refilled completely hold no information: forget them; if every bucket is
            # in use (a flood of addresses), start afresh rather than grow without bound.
            refill = self.burst / self.rate
            self._buckets = {k: v for k, v in self._buckets.items() if now - v[1] < refill}
            if len(self._buckets) >= _MAX_BUCKETS:
                self._buckets.clear()
        self._buckets[identity] = (tokens, now)


class SharedLimiter:
    """Token buckets in the database (ops.take_tokens), spent from a small local allowance per identity.

    The allowance is what this process has already taken from the shared bucket and not yet spent: a
    caller's total across processes never exceeds its budget, and at most `batch` tokens per process wait
    unspent. When the database cannot be asked, `fallback` (a bucket in this process) decides.
    """

    def __init__(self, rate: float, burst: int) -> None:
        self.rate = rate
        self.burst = float(burst)
        # a tenth of a second's worth, at least one token and never more than a tenth of the burst
        self.batch = max(1.0, min(rate * 0.1, self.burst / 10))
        self.fallback = RateLimiter(rate, burst)
        self._allowance: dict[str, float] = {}
        self._pruned = time.monotonic()

    async def take(self, pool: AsyncConnectionPool, identity: str, cost: float = 1.0) -> float:
        """Spends `cost` tokens: 0.0 if the request may go ahead, else the seconds until it could."""
        if self.rate <= 0:
            return 0.0
        have = self._allowance.get(identity, 0.0)
        if have >= cost:
            self._allowance[identity] = have - cost
            return 0.0
        try:
            granted, wait = await asyncio.wait_for(self._ask(pool, identity, cost - have), _SHARED_TIMEOUT_S)
        except (TimeoutError, psycopg.Error, PoolTimeout) as exc:
            LOGGER.warning("rate budget of %s taken in this process: the database did not answer (%s)",
                           identity, exc.__class__.__name__)
            return self.fallback.take(identity, cost=cost)
        # another request of this identity may have spent or added to the allowance while we waited
        have = self._allowance.get(identity, 0.0) + granted
        if have + 1e-9 >= cost:
            self._remember(identity, max(0.0, have - cost))
            return 0.0
        self._remember(identity, have)
        return max(wait, 0.001)

    async def _ask(self, pool: AsyncConnectionPool, identity: str, least: float) -> tuple[float, float]:
        async with pool.connection() as conn:
            cursor = await conn.execute("SELECT granted, wait_seconds FROM ops.take_tokens(%s, %s, %s, %s, %s)",
                                        (identity, max(self.batch, least), least, self.rate, self.burst),
                                        prepare=True)
            row = await cursor.fetchone()
            if time.monotonic() - self._pruned > _PRUNE_EVERY_S:
                self._pruned = time.monotonic()
                # a bucket that has refilled completely holds no information
                await conn.execute("DELETE FROM ops.rate_budgets WHERE stamp < clock_timestamp() - "
                                   "make_interval(secs => %s)", (self.burst / self.rate,))
        assert row is not None
        return float(row[0]), float(row[1])

    def _remember(self, identity: str, allowance: float) -> None:
        if identity not in self._allowance and len(self._allowance) >= _MAX_BUCKETS:
            self._allowance.clear()  # at most a batch per identity is forgotten, never granted twice
        self._allowance[identity] = allowance


@dataclass(frozen=True)
class Guard:
    """The app's limits, built once from HttpSettings by create_app (kept on AppState.guard)."""

    settings: HttpSettings
    limiter: SharedLimiter

    @classmethod
    def from_settings(cls, settings: HttpSettings) -> "Guard":
        return cls(settings, SharedLimiter(settings.rate_per_second, settings.rate_burst))

    @property
    def cql2(self) -> Cql2Limits:
        s = self.settings
        return Cql2Limits(s.cql2_max_nodes, s.cql2_max_depth, s.cql2_max_coordinates)

    async def admit(self, request: Request, identity: str) -> None:
        wait = await self.limiter.take(app_state(request).pool, identity, self.cost(request))
        if wait > 0:
            raise RateLimited(math.ceil(wait), self.settings.rate_per_second, self.settings.rate_burst)

    def cost(self, request: Request) -> float:
        """A page reached by its `next` link (a keyset cursor) costs a fraction: it is the same query going on,
        an index seek for the database, and clients (GDAL, QGIS, OWSLib) follow these links as fast as they can."""
        if request.method == "GET" and "cursor" in request.query_params:
            return self.settings.continuation_cost
        return 1.0


def guard_of(request: Request) -> Guard:
    return app_state(request).guard


def _address(request: Request) -> str:
    # behind a trusted proxy this is the client it reports in X-Forwarded-For (uvicorn's ProxyHeadersMiddleware,
    # services/common/serving.py), so 200 clients behind one proxy have 200 budgets
    return f"addr:{request.client.host if request.client else 'unknown'}"


def identity(caller: credentials.Caller, request: Request) -> str:
    """Whose bucket a request takes from: the key, the token's subject, or the anonymous caller's address."""
    if caller.anonymous:
        return _address(request)
    return f"key:{caller.key_id}" if caller.key_id else caller.subject


async def authenticate(request: Request) -> credentials.Caller:
    """The app's one dependency: who is calling (credentials.authenticate), then that caller's rate limit (429)."""
    guard = guard_of(request)
    try:
        caller = await credentials.authenticate(request)
    except HTTPException as exc:
        if exc.status_code == 401:
            await guard.admit(request, _address(request))  # a wrong credential costs the address: no free key guessing
        raise
    await guard.admit(request, identity(caller, request))
    return caller


def cql2_limits(request: Request) -> Cql2Limits:
    return guard_of(request).cql2


class BodyLimit:
    """ASGI middleware capping request bodies (413 with a JSON body naming the cap and its setting)."""

    def __init__(self, app: ASGIApp, max_body_bytes: int, max_upload_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.max_upload_bytes = max_upload_bytes

    def _cap(self, scope: Scope) -> tuple[int, str]:
        if scope.get("method") == "POST" and UPLOAD_PATHS.match(scope.get("path", "")):
            return self.max_upload_bytes, "GIS_HTTP_MAX_UPLOAD_BYTES"
        return self.max_body_bytes, "GIS_HTTP_MAX_BODY_BYTES"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        cap, setting = self._cap(scope)
        declared = dict(scope.get("headers", ())).get(b"content-length", b"").strip()
        if declared.isdigit() and int(declared) > cap:
            response = BodyTooLarge(cap, setting, int(declared)).response()
            await response(scope, receive, send)
            return
        received = 0

        async def capped() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > cap:
                    raise BodyTooLarge(cap, setting)  # inside the route: the error handlers answer 413
            return message

        await self.app(scope, capped, send)
