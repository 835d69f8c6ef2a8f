"""Production serving: proxy headers and root path, request ids, JSON access logs, Prometheus metrics.

`RequestContext` is the outermost ASGI middleware. For each HTTP request it
- believes X-Forwarded-Prefix / -Host (and, through uvicorn's ProxyHeadersMiddleware, -For / -Proto) only
  from the proxies GIS_SERVE_FORWARDED_ALLOW_IPS names, and sets the ASGI root_path (GIS_SERVE_ROOT_PATH
  or the proxy's prefix), so every link the service builds from request.base_url is right under /gis/;
- takes the caller's X-Request-ID when it is a sane token, else makes one, and returns it in X-Request-ID;
- adds X-Layer-Version (`layer=version, ...`, the versions the body was read at) and X-Served-By
  (primary or standby) when the request read layers through AppState.read;
- writes one JSON access line (logger `gis.access`) and counts the request in the metrics.

Metrics use prometheus_client; with several workers `gis serve` sets PROMETHEUS_MULTIPROC_DIR before the
workers start and /metrics aggregates every worker's files (multiprocess mode).
"""

import logging
import os
import re
import sys
import time
import uuid
from typing import TYPE_CHECKING, Any, cast

import orjson
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest, multiprocess
from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

from gis.db.routing import Served
from gis.settings import ServeSettings
from services.common.state import SERVED

if TYPE_CHECKING:
    from uvicorn._types import ASGI3Application

ACCESS = logging.getLogger("gis.access")
REQUEST_ID_HEADER = "X-Request-ID"
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")
_PREFIX = re.compile(r"^(/[A-Za-z0-9._~-]+)*$")
_CHILDREN_KEPT = 4096  # label sets whose metric children Metrics.answered keeps (methods and statuses are few)
_FORWARDED = frozenset({b"x-forwarded-prefix", b"x-forwarded-host", b"x-request-id"})  # what RequestContext reads
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


def multiprocess_dir() -> str | None:
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


class Metrics:
    """The service's metrics, registered in a registry of the app's own (several apps may live in one process:
    the tests'); in multiprocess mode values go to the shared files and /metrics reads them all."""

    def __init__(self) -> None:
        self.multiprocess = multiprocess_dir() is not None
        self.registry = CollectorRegistry()
        own = None if self.multiprocess else self.registry
        self.requests = Counter("gis_http_requests_total", "HTTP requests answered, by route template and status",
                                ["method", "route", "status"], registry=own)
        self.latency = Histogram("gis_http_request_duration_seconds", "Time to answer, by route template",
                                 ["method", "route"], buckets=LATENCY_BUCKETS, registry=own)
        self.pool = Gauge("gis_db_pool_connections", "Pooled database connections by pool and state",
                          ["pool", "state"], registry=own, multiprocess_mode="livesum")
        self.available = Gauge("gis_db_available", "1 while the database answers the probe, 0 while the breaker "
                               "is open", ["pool"], registry=own, multiprocess_mode="livemin")
        self.lag = Gauge("gis_db_standby_lag_seconds", "Standby replay lag seen by the probe",
                         ["pool"], registry=own, multiprocess_mode="livemax")
        self.jobs = Gauge("gis_job_queue_depth", "Process jobs accepted or running (ops.jobs)", ["status"],
                          registry=own, multiprocess_mode="livemax")
        self._answered: dict[tuple[str, str, str], tuple[Any, Any]] = {}  # children of requests and latency

    def answered(self, method: str, route: str, status: str, seconds: float) -> None:
        """One request counted and timed. Each label set's pair of children is kept: prometheus_client's labels()
        validates and looks them up under a lock on every call (about 1% of a request's CPU)."""
        children = self._answered.get((method, route, status))
        if children is None:
            if len(self._answered) >= _CHILDREN_KEPT:
                self._answered.clear()
            children = self._answered[(method, route, status)] = (
                self.requests.labels(method, route, status), self.latency.labels(method, route))
        children[0].inc()
        children[1].observe(seconds)

    def exposition(self) -> bytes:
        if self.multiprocess:
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)
            return bytes(generate_latest(registry))
        return bytes(generate_latest(self.registry))


def _trusted(client: tuple[str, int] | None, allowed: set[str]) -> bool:
    return "*" in allowed or (client is not None and client[0] in allowed)


class RequestContext:
    """The outermost middleware (see the module's docstring)."""

    def __init__(self, app: ASGIApp, settings: ServeSettings, metrics: Metrics) -> None:
        self.allowed = {ip.strip() for ip in settings.forwarded_allow_ips.split(",") if ip.strip()}
        # uvicorn types the ASGI interface with TypedDicts, Starlette with plain mappings: the same protocol.
        proxy = ProxyHeadersMiddleware(cast("ASGI3Application", app), trusted_hosts=list(self.allowed) or "127.0.0.1")
        self.app = cast(ASGIApp, proxy)
        self.root_path = settings.root_path.rstrip("/")
        self.access_log = settings.access_log
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        headers: dict[str, str] = {}  # only the request headers read here (the last of repeated ones)
        for key, value in scope["headers"]:
            if (name := key.lower()) in _FORWARDED:
                headers[name.decode("latin-1")] = value.decode("latin-1")
        trusted = _trusted(scope.get("client"), self.allowed)
        scope = dict(scope)
        prefix = headers.get("x-forwarded-prefix", "").rstrip("/") if trusted else ""
        root = prefix if prefix and _PREFIX.match(prefix) else self.root_path
        if root and not scope.get("root_path"):
            # ASGI (and Starlette's routing and mounts) want the path to include root_path: a proxy that strips
            # the prefix (nginx proxy_pass .../;) gets it put back; one that keeps it is taken as it is.
            scope["root_path"] = root
            if not (scope["path"].startswith(root + "/") or scope["path"] == root):
                scope["path"] = root + scope["path"]
                scope["raw_path"] = root.encode() + (scope.get("raw_path") or scope["path"][len(root):].encode())
        forwarded_host = headers.get("x-forwarded-host", "").split(",")[0].strip() if trusted else ""
        if forwarded_host:
            scope["headers"] = [(k, v) for k, v in scope["headers"] if k.lower() != b"host"] + [
                (b"host", forwarded_host.encode("latin-1"))]
        given = headers.get("x-request-id", "")
        request_id = given if _REQUEST_ID.match(given) else uuid.uuid4().hex
        served = Served()
        token = SERVED.set(served)
        status = 500
        sent = 0

        async def send_with_headers(message: Message) -> None:
            nonlocal status, sent
            if message["type"] == "http.response.start":
                status = int(message["status"])
                extra = MutableHeaders(scope=message)
                extra[REQUEST_ID_HEADER] = request_id
                if served.server:
                    extra["X-Served-By"] = served.server
                if served.versions:
                    extra["X-Layer-Version"] = ", ".join(f"{k}={v}" for k, v in sorted(served.versions.items()))
            elif message["type"] == "http.response.body":
                sent += len(message.get("body", b""))
            await send(message)

        try:
            await self.app(scope, receive, send_with_headers)
        finally:
            SERVED.reset(token)
            took = time.perf_counter() - started
            route = getattr(scope.get("route"), "path", None) or "unmatched"
            self.metrics.answered(scope["method"], route, str(status), took)
            if self.access_log and ACCESS.isEnabledFor(logging.INFO):
                client = scope.get("client")
                _access(orjson.dumps({
                    "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "request_id": request_id,
                    "method": scope["method"], "path": scope["path"], "route": route, "status": status,
                    "duration_ms": round(took * 1000, 2), "bytes": sent, "server": served.server or None,
                    "client": client[0] if client else None, "pid": os.getpid(),
                }).decode())


def _access(line: str) -> None:
    """The access line, logged as ACCESS.info would, but for the caller's file and line, which logging finds by
    walking the stack (sys._getframe, an audited event: every audit hook in the process runs on it) and the line's
    "%(message)s" format never shows."""
    ACCESS.handle(ACCESS.makeRecord(ACCESS.name, logging.INFO, __file__, 0, line, (), None))


class _ClientErrorsWithoutTraceback(logging.Filter):
    """pygeoapi logs every exception it answers, with its traceback, even an unknown job id (a 404): a client's
    mistake is one line at INFO, never a traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        from pygeoapi.process.base import JobNotFoundError, JobResultNotFoundError

        if record.exc_info and record.exc_info[0] and issubclass(
                record.exc_info[0], JobNotFoundError | JobResultNotFoundError):
            record.exc_info = None
            record.exc_text = None
            record.levelno, record.levelname = logging.INFO, "INFO"
            return logging.getLogger(record.name).isEnabledFor(logging.INFO)
        return True


def configure_logging(settings: ServeSettings) -> None:
    """The access log as JSON lines on standard error; pygeoapi's client errors without tracebacks. Idempotent."""
    ACCESS.setLevel(logging.INFO if settings.access_log else logging.WARNING)
    ACCESS.propagate = False
    if not ACCESS.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(message)s"))
        ACCESS.addHandler(handler)
    pygeoapi_api = logging.getLogger("pygeoapi.api")
    if not any(isinstance(f, _ClientErrorsWithoutTraceback) for f in pygeoapi_api.filters):
        pygeoapi_api.addFilter(_ClientErrorsWithoutTraceback())


def metrics_text(metrics: Metrics) -> tuple[bytes, str]:
    from prometheus_client import CONTENT_TYPE_LATEST

    return metrics.exposition(), CONTENT_TYPE_LATEST


def pool_stats(pool: Any) -> dict[str, int]:
    stats = pool.get_stats()
    size, idle = int(stats.get("pool_size", 0)), int(stats.get("pool_available", 0))
    return {"in_use": max(size - idle, 0), "idle": idle, "waiting": int(stats.get("requests_waiting", 0))}


_ROOT_RELATIVE = re.compile(rb'(\s(?:href|src|action)=")/(?!/)')


class RootPathLinks:
    """The innermost middleware: under a root path (/gis), root-relative links in our HTML pages (`href="/..."`,
    `src="/..."`) get the prefix, and <html> carries data-root for the web map's scripts (pages have no inline
    script: the CSP allows none, see services/common/headers.py)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        root = str(scope.get("root_path") or "").rstrip("/") if scope["type"] == "http" else ""
        if not root or not _PREFIX.match(root):
            await self.app(scope, receive, send)
            return
        start: Message | None = None
        chunks: list[bytes] = []

        async def rewrite(message: Message) -> None:
            nonlocal start
            if message["type"] == "http.response.start":
                content_type = dict(message.get("headers", [])).get(b"content-type", b"")
                if content_type.startswith(b"text/html"):
                    start = message
                    return
                await send(message)
            elif message["type"] == "http.response.body" and start is not None:
                chunks.append(message.get("body", b""))
                if message.get("more_body"):
                    return
                prefix = root.encode()
                body = _ROOT_RELATIVE.sub(rb'\1' + prefix + b"/", b"".join(chunks))
                body = body.replace(b"<html", b'<html data-root="' + prefix + b'"', 1)
                headers = MutableHeaders(scope=start)
                headers["content-length"] = str(len(body))
                await send(start)
                await send({"type": "http.response.body", "body": body})
            else:
                await send(message)

        await self.app(scope, receive, rewrite)
