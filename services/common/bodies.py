"""Request bodies read by hand: capped while they stream (413 past the cap), and replayed for Starlette's form
parser once read. Used by the planning, edits, sensing and deliveries routers and by the processes."""

from typing import Any

from fastapi import Request

from gis.analysis.proposal import ProposalTooLarge


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refused (413) as soon as it passes `limit` bytes."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise ProposalTooLarge("body", f"{int(declared):,} bytes; at most {limit:,}")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ProposalTooLarge("body", f"more than {limit:,} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def replay(request: Request, body: bytes) -> Request:
    """The same request with its (already read) body, for Starlette's form parser."""
    sent = False

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return Request(request.scope, receive)

