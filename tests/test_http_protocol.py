"""gis.http_protocol: a response's head goes out in one write with what follows it, over a real socket.

The transport is a real asyncio transport on a socket pair; what reaches it is recorded on its way (the
transport still writes it), and the other end of the pair reads what was sent.
"""

import asyncio
import socket
from typing import Any

from gis.http_protocol import HeldHead

HEAD = b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n"


class Recorded:
    """A real transport, with the writes that reach it recorded."""

    def __init__(self, transport: asyncio.Transport) -> None:
        self.transport = transport
        self.writes: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.writes.append(bytes(data))
        self.transport.write(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.transport, name)


async def _pair() -> tuple[Recorded, socket.socket]:
    ours, theirs = socket.socketpair()
    transport, _ = await asyncio.get_running_loop().connect_accepted_socket(asyncio.Protocol, ours)
    return Recorded(transport), theirs


def _received(sock: socket.socket, size: int) -> bytes:
    sock.settimeout(5)
    got = b""
    while len(got) < size:
        got += sock.recv(size - len(got))
    return got


def test_a_head_and_its_body_go_out_in_one_write() -> None:
    async def run() -> tuple[list[bytes], bytes]:
        recorded, theirs = await _pair()
        held = HeldHead(recorded, asyncio.get_running_loop())  # type: ignore[arg-type]
        held.write(HEAD)
        assert recorded.writes == []  # held until what follows it
        held.write(b"hello")
        held.write(b"more")  # not a head: written as it comes
        await asyncio.sleep(0)
        received = _received(theirs, len(HEAD) + 9)
        held.close()
        theirs.close()
        return recorded.writes, received

    writes, received = asyncio.run(run())
    assert writes == [HEAD + b"hello", b"more"]
    assert received == HEAD + b"hellomore"


def test_a_head_nothing_follows_goes_out_at_the_end_of_the_loops_turn_and_before_a_close() -> None:
    async def run() -> tuple[list[bytes], list[bytes], bytes]:
        recorded, theirs = await _pair()
        held = HeldHead(recorded, asyncio.get_running_loop())  # type: ignore[arg-type]
        held.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        await asyncio.sleep(0)
        after_a_turn = list(recorded.writes)
        held.write(HEAD)
        held.close()  # a head still held is sent before the transport closes
        received = _received(theirs, 25 + len(HEAD))
        theirs.close()
        return after_a_turn, recorded.writes, received

    after_a_turn, writes, received = asyncio.run(run())
    assert after_a_turn == [b"HTTP/1.1 100 Continue\r\n\r\n"]
    assert writes == [b"HTTP/1.1 100 Continue\r\n\r\n", HEAD]
    assert received == b"HTTP/1.1 100 Continue\r\n\r\n" + HEAD
