"""Limits every request meets: a rate per caller and a cap on the request body.

Rate: a token bucket per API key / token subject, or per client address for anonymous callers and for
credentials that do not check out (so guessing keys is limited too). Buckets live in the process:
with several uvicorn workers each worker keeps its own, so a caller's effective rate is up to
workers x GIS_HTTP_RATE_PER_SECOND (docs/security.md says why that trade was made).

Body: every request body is capped at GIS_HTTP_MAX_BODY_BYTES, the upload endpoints' at
GIS_HTTP_MAX_UPLOAD_BYTES; a declared Content-Length over the cap is refused before the body is read,
a chunked body as soon as it passes the cap.
"""

import math
import re
import time
from dataclasses import dataclass

from fastapi import HTTPException, Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gis.features.cql2.complexity import Cql2Limits
from gis.security.settings import HttpSettings
from services import auth
from services.errors import BodyTooLarge, RateLimited

# POST endpoints that take files: overlap-check proposals (multipart, or the file as the body) and process
# execution (files base64-encoded in JSON); and sensor-reading batches (up to 10,000 readings, about 1 MiB).
# Each still applies its own, smaller cap to what it reads.
UPLOAD_PATHS = re.compile(
    r"^/(api/planning/overlap-checks|api/pipeline/sensor-readings|processes/[^/]+/execution|api/deliveries/[^/]+)/?$")
_MAX_BUCKETS = 100_000


class RateLimiter:
    """Token buckets by identity: `burst` requests at once, refilled at `rate` per second."""

    def __init__(self, rate: float, burst: int) -> None:
        self.rate = rate
        self.burst = float(burst)
        self._buckets: dict[str, tuple[float, float]] = {}  # identity -> (tokens, when counted)

    def take(self, identity: str, now: float | None = None) -> float:
        """Takes one token: 0.0 if the request may go ahead, else the seconds until it could."""
        if self.rate <= 0:
            return 0.0
        now = time.monotonic() if now is None else now
        tokens, stamp = self._buckets.get(identity, (self.burst, now))
        tokens = min(self.burst, tokens + (now - stamp) * self.rate)
        if tokens >= 1.0:
            self._remember(identity, tokens - 1.0, now)
            return 0.0
        self._remember(identity, tokens, now)
        return (1.0 - tokens) / self.rate

    def _remember(self, identity: str, tokens: float, now: float) -> None:
        if identity not in self._buckets and len(self._buckets) >= _MAX_BUCKETS:
            # Buckets that have refilled completely hold no information: forget them; if every bucket is
            # in use (a flood of addresses), start afresh rather than grow without bound.
            refill = self.burst / self.rate
            self._buckets = {k: v for k, v in self._buckets.items() if now - v[1] < refill}
            if len(self._buckets) >= _MAX_BUCKETS:
                self._buckets.clear()
        self._buckets[identity] = (tokens, now)


@dataclass(frozen=True)
class Guard:
    """The app's limits, built once from HttpSettings by create_app (kept on app.state.guard)."""

    settings: HttpSettings
    limiter: RateLimiter

    @classmethod
    def from_settings(cls, settings: HttpSettings) -> "Guard":
        return cls(settings, RateLimiter(settings.rate_per_second, settings.rate_burst))

    @property
    def cql2(self) -> Cql2Limits:
        s = self.settings
        return Cql2Limits(s.cql2_max_nodes, s.cql2_max_depth, s.cql2_max_coordinates)

    def admit(self, identity: str) -> None:
        wait = self.limiter.take(identity)
        if wait > 0:
            raise RateLimited(math.ceil(wait), self.settings.rate_per_second, self.settings.rate_burst)


def guard_of(request: Request) -> Guard:
    found: Guard = request.app.state.guard
    return found


def _address(request: Request) -> str:
    return f"addr:{request.client.host if request.client else 'unknown'}"


def identity(caller: auth.Caller, request: Request) -> str:
    """Whose bucket a request takes from: the key, the token's subject, or the anonymous caller's address."""
    if caller.anonymous:
        return _address(request)
    return f"key:{caller.key_id}" if caller.key_id else caller.subject


async def authenticate(request: Request) -> auth.Caller:
    """The app's one dependency: who is calling (auth.authenticate), then that caller's rate limit (429)."""
    guard = guard_of(request)
    try:
        caller = await auth.authenticate(request)
    except HTTPException as exc:
        if exc.status_code == 401:
            guard.admit(_address(request))  # a wrong credential costs the address: no free key guessing
        raise
    guard.admit(identity(caller, request))
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
