"""uvicorn's httptools protocol, writing each response's head together with what follows it.

uvicorn writes a response's status line and headers when the application sends `http.response.start`, and
its body when it sends `http.response.body`: two writes, so two system calls, two TCP segments and two
wake-ups of the client for every response, where one would do. On loopback the kernel does the receiver's
work in the sender's system call, so the first write of each response is among the costliest things a
request of ours does (py-spy on the bench: a fifth of a worker's busy time was spent in uvicorn's writes).

`HttpToolsOneWrite` (what `gis serve` runs, `--http` in uvicorn's terms) holds the head until the next write
of the connection and sends both as one; a head that nothing follows in the same turn of the event loop (a
`100 Continue`, a response whose body is still being made) is sent at the end of that turn, so nothing
waits on it. Every other write, and everything else the transport does, is the transport's own.
"""

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

_HEAD = b"HTTP/1.1 "  # how uvicorn's status lines begin (uvicorn.protocols.http.httptools_impl.STATUS_LINE)


class HeldHead:
    """A connection's transport that holds a response's head until what follows it is written."""

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._held: bytes | None = None

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self._held is not None:
            held, self._held = self._held, None
            self._transport.write(b"".join((held, data)))
        elif bytes(data[:len(_HEAD)]) == _HEAD:
            self._held = bytes(data)
            self._loop.call_soon(self.flush)
        else:
            self._transport.write(data)

    def flush(self) -> None:
        """Send a held head now (the end of the loop's turn, or the connection closing)."""
        if self._held is not None:
            held, self._held = self._held, None
            self._transport.write(held)

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def __getattr__(self, name: str) -> Any:  # everything else: the transport's own
        return getattr(self._transport, name)


class HttpToolsOneWrite(HttpToolsProtocol):
    """uvicorn's httptools protocol over a HeldHead transport."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(HeldHead(transport, self.loop))  # type: ignore[arg-type]
