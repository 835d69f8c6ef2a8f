"""Security headers on every response, and CORS for the origins the settings name.

The Content-Security-Policy lets our pages run only scripts served by us: files from our own origin
('self', e.g. the MapLibre web map and its blob: workers) and inline <script> blocks whose SHA-256
this middleware computes from the HTML page it passes on, so a page may keep an inline script without
opening the policy to injected ones (nonces would need every page builder to take part; hashes need
none). Inline styles stay allowed (our pages and reports carry their CSS inline, and MapLibre sets
style attributes).

CORS: none by default. For an allowed origin, simple requests get Access-Control-Allow-Origin, and
preflights (OPTIONS with Access-Control-Request-Method) are answered here, before authentication,
since browsers send them without credentials. A preflight from another origin is a 403.
"""

import base64
import hashlib
import re
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


def content_security_policy(script_hashes: Sequence[str] = ()) -> str:
    directives = dict(_CSP)
    if script_hashes:
        directives["script-src"] += "".join(f" 'sha256-{h}'" for h in script_hashes)
    return "; ".join(f"{name} {value}" for name, value in directives.items())


SECURITY_HEADERS: dict[str, str] = {
    "X-Content-Type-Options": "nosniff",
    # QGIS 3.22 users carry their key in URLs (?api_key=): no URL of ours is ever sent on as a Referer.
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": content_security_policy(),
    "Permissions-Policy": "camera=(), microphone=(), geolocation=(), payment=()",
    "Cross-Origin-Opener-Policy": "same-origin",
}

CORS_METHODS = "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS"
CORS_REQUEST_HEADERS = ("Accept, Accept-Language, Authorization, Content-Crs, Content-Type, If-Match, If-None-Match, "
                        "Prefer, X-API-Key, X-Edit-Reason")
CORS_EXPOSED_HEADERS = "Content-Crs, ETag, Link, Location, Retry-After, Server-Timing, Preference-Applied"
CORS_MAX_AGE = "600"

# An inline script: a <script> element without a src attribute, and its text (what a CSP hash covers).
_INLINE_SCRIPT = re.compile(rb"<script(?![^>]*\ssrc\s*=)[^>]*>(.*?)</script\s*>", re.IGNORECASE | re.DOTALL)


def inline_script_hashes(page: bytes) -> list[str]:
    """Base64 SHA-256 of each inline script of an HTML page, in order, each once."""
    found = (base64.b64encode(hashlib.sha256(m.group(1)).digest()).decode() for m in _INLINE_SCRIPT.finditer(page))
    return list(dict.fromkeys(found))


class SecurityHeaders:
    """ASGI middleware: the headers above on every response, CSP hashes for HTML pages, CORS."""

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
        start: Message | None = None
        chunks: list[bytes] = []

        async def send_with_headers(message: Message) -> None:
            nonlocal start
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in {**SECURITY_HEADERS, **extra}.items():
                    headers[name] = value
                if cors:
                    headers.add_vary_header("Origin")
                if headers.get("content-type", "").startswith("text/html"):
                    start = message  # held back until the page is complete: its script hashes go in the CSP
                    return
                await send(message)
            elif message["type"] == "http.response.body" and start is not None:
                chunks.append(message.get("body", b""))
                if message.get("more_body", False):
                    return
                page = b"".join(chunks)
                hashes = inline_script_hashes(page)
                if hashes:
                    MutableHeaders(scope=start)["Content-Security-Policy"] = content_security_policy(hashes)
                await send(start)
                await send({"type": "http.response.body", "body": page})
            else:
                await send(message)

        await self.app(scope, receive, send_with_headers)
