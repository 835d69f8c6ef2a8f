"""Security headers on every response, and CORS for the origins the settings name.

The Content-Security-Policy lets our pages run only scripts served by us as files from our own origin
('self', e.g. the MapLibre web map and its blob: workers), never an inline <script>: every page is rendered
from an autoescaped template with no inline script (gis/rendering.py), so anything inline in a page was
injected, and the browser refuses it. (Hashing the inline scripts of each page into the policy, as this
middleware once did, allowed an injected script as readily as ours.) Inline styles stay allowed (our
pages and reports carry their CSS inline, and MapLibre sets style attributes).

CORS: none by default. For an allowed origin, simple requests get Access-Control-Allow-Origin, and
preflights (OPTIONS with Access-Control-Request-Method) are answered here, before authentication,
since browsers send them without credentials. A preflight from another origin is a 403.
"""

from collections.abc import Sequence

import orjson
from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

_CSP = {
    "default-src": "'self'",
    "script-src": "'self'",
    "worker-src": "'self' blob:",
    "child-src": "'self' blob:",
    "img-src": "'self' data: blob:",
    "style-src": "'self' 'unsafe-inline'",
    "font-src": "'self' data:",
    "connect-src": "'self'",
    "object-src": "'none'",
    "base-uri": "'self'",
    "form-action": "'self'",
    "frame-ancestors": "'none'",
}


def content_security_policy() -> str:
    return "; ".join(f"{name} {value}" for name, value in _CSP.items())


SECURITY_HEADERS: dict[str, str] = {
    "X-Content-Type-Options": "nosniff",
    # QGIS 3.22 users carry their key in URLs (?api_key=): no URL of ours is ever sent on as a Referer.
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": content_security_policy(),
    "Permissions-Policy": "camera=(), microphone=(), geolocation=(), payment=()",
    "Cross-Origin-Opener-Policy": "same-origin",
}

# The same as raw ASGI headers, appended to each response's own (without any of the same names) when there is no CORS:
# MutableHeaders, setting them one by one, scans the response's headers once for each.
_SECURITY_RAW = tuple((name.lower().encode("latin-1"), value.encode("latin-1"))
                      for name, value in SECURITY_HEADERS.items())
_SECURITY_NAMES = frozenset(name for name, _ in _SECURITY_RAW)

CORS_METHODS = "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS"
CORS_REQUEST_HEADERS = ("Accept, Accept-Language, Authorization, Content-Crs, Content-Type, If-Match, If-None-Match, "
                        "Prefer, X-API-Key, X-Edit-Reason")
CORS_EXPOSED_HEADERS = "Content-Crs, ETag, Link, Location, Retry-After, Server-Timing, Preference-Applied"
CORS_MAX_AGE = "600"

class SecurityHeaders:
    """ASGI middleware: the headers above on every response, and CORS."""

    def __init__(self, app: ASGIApp, cors_origins: Sequence[str] = ()) -> None:
        self.app = app
        self.any_origin = "*" in cors_origins
        self.origins = frozenset(o for o in cors_origins if o != "*")

    def _allowed(self, origin: str | None) -> bool:
        return origin is not None and (self.any_origin or origin.rstrip("/") in self.origins)

    def _cors(self, origin: str) -> dict[str, str]:
        return {"Access-Control-Allow-Origin": "*" if self.any_origin else origin,
                "Access-Control-Expose-Headers": CORS_EXPOSED_HEADERS}

    async def _preflight(self, scope: Scope, receive: Receive, send: Send, origin: str) -> None:
        if self._allowed(origin):
            status, body = 204, b""
            headers = {**self._cors(origin), "Access-Control-Allow-Methods": CORS_METHODS,
                       "Access-Control-Allow-Headers": CORS_REQUEST_HEADERS, "Access-Control-Max-Age": CORS_MAX_AGE}
        else:
            status, headers = 403, {"Content-Type": "application/json"}
            body = orjson.dumps({"code": "Forbidden", "parameter": "Origin",
                                 "description": f"Origin: '{origin[:100]}' may not call this API from a browser"})
        raw = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in {**SECURITY_HEADERS, **headers}.items()]
        raw += [(b"content-length", str(len(body)).encode()), (b"vary", b"Origin")]
        await send({"type": "http.response.start", "status": status, "headers": raw})
        await send({"type": "http.response.body", "body": body})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_headers = Headers(scope=scope)
        origin = request_headers.get("origin")
        cors = self.any_origin or bool(self.origins)
        if (cors and origin is not None and scope["method"] == "OPTIONS"
                and "access-control-request-method" in request_headers):
            await self._preflight(scope, receive, send, origin)
            return
        extra = self._cors(origin) if cors and origin is not None and self._allowed(origin) else {}

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start" and not cors:
                message["headers"] = [*(h for h in message.get("headers", ()) if h[0].lower() not in _SECURITY_NAMES),
                                      *_SECURITY_RAW]
            elif message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in {**SECURITY_HEADERS, **extra}.items():
                    headers[name] = value
                headers.add_vary_header("Origin")
            await send(message)

        await self.app(scope, receive, send_with_headers)
