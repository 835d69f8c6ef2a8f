"""Path segments that hold an encoded slash (`%2F`): a feature id such as `A/12` reaches its route.

ASGI servers hand the application the decoded path, so `/collections/x/items/A%2F12` arrives as
`/collections/x/items/A/12`, which matches no route (or, for `A%2Fhistory`, the wrong one). The raw path keeps
the difference. Where it holds an encoded slash, `EncodedSlashes` rebuilds the routed path from the raw one,
segment by segment, with each segment that decodes to something containing `/` left percent-encoded (one
segment, so routing sees it as one path parameter), and keeps each such segment's decoded value in the scope;
`original(request, value)` turns the path parameter back into it. Every other path is left exactly as the
server decoded it. Links the service writes encode ids with quote(..., safe=""), so they come back here.
"""

from urllib.parse import quote, unquote

from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

_KEY = "gis.encoded_segments"  # scope key: {segment as routed: its decoded value}


class EncodedSlashes:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        raw = scope.get("raw_path") if scope["type"] in ("http", "websocket") else None
        if raw and b"%2f" in raw.lower():
            kept: dict[str, str] = {}
            parts = []
            for segment in raw.decode("utf-8", "replace").split("/"):
                value = unquote(segment)  # as the server decodes a path (UTF-8, invalid bytes replaced)
                if "/" in value:
                    routed = quote(value, safe="")
                    kept[routed] = value
                    parts.append(routed)
                else:
                    parts.append(value)
            scope = {**scope, "path": "/".join(parts), _KEY: kept}
        await self.app(scope, receive, send)


def original(request: Request, value: str) -> str:
    """A path parameter as the client sent it, decoded: the id with its slashes for an encoded-slash segment."""
    kept = request.scope.get(_KEY)
    return kept.get(value, value) if kept else value
