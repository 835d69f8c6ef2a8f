"""Ports for the servers a test starts, and a bounded wait for what they do asynchronously.

A port the kernel hands out for bind(0) lies in its range of outgoing ports, so by the time a server binds
it an outgoing connection may hold it ("port in use", seen with several suites on one machine). These
ports come from below that range, and are checked free before they are handed out.
"""

import random
import socket
import time
from collections.abc import Callable

_BELOW_OUTGOING = (20000, 32000)  # Linux's outgoing range starts at 32768 by default


def free_port() -> int:
    """A port on 127.0.0.1 nothing listens on now, outside the kernel's range of outgoing ports."""
    for _ in range(200):
        port = random.randint(*_BELOW_OUTGOING)
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port between 20000 and 32000 on 127.0.0.1")


def until(check: Callable[[], bool], seconds: float = 30, interval: float = 0.2) -> bool:
    """Whether check() came true within `seconds` (polled every `interval`); what the test then asserts."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(interval)
    return False
