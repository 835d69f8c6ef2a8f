"""Child processes for the benchmarks: timed runs with their peak memory, and servers on loopback."""

import os
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Measured:
    command: str
    seconds: float
    peak_rss_mib: float  # the child's peak resident set size (its own process tree, not the database server)
    returncode: int
    output_tail: str
    load_before: float | None = None  # the machine's 1-minute load average when the step started


def load_average() -> float:
    """1-minute load average: on a shared machine, what else was running."""
    return round(os.getloadavg()[0], 2)


# Our service as benchmarked: the per-caller rate limit off (a benchmark is one very busy caller; it measures
# the service, not the limiter's 429s).
UNLIMITED = {"GIS_HTTP_RATE_PER_SECOND": "0"}
GNU_TIME = "/usr/bin/time"  # Debian's `time`: reports its child's own peak RSS


def measure(args: Sequence[str], env: Mapping[str, str] | None = None, cwd: Path | None = None,
            shown: str | None = None) -> Measured:
    """Run a command to completion: its wall time, and its peak RSS as GNU time reports it.

    Not wait4() from here: a child forked from this (large) Python process is charged the parent's
    pages until it execs, so small programs would look as big as the harness.
    """
    load = load_average()
    with tempfile.NamedTemporaryFile("r", suffix=".rss") as report:
        started = time.perf_counter()
        out = subprocess.run([GNU_TIME, "-f", "%M", "-o", report.name, *args], env=dict(env) if env else None,
                             cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, check=False)
        seconds = time.perf_counter() - started
        lines = [line for line in report.read().splitlines() if line.strip().isdigit()]
    peak_kib = int(lines[-1]) if lines else 0
    return Measured(
        command=shown or " ".join(args),
        seconds=round(seconds, 2),
        peak_rss_mib=round(peak_kib / 1024, 1),
        returncode=out.returncode,
        output_tail="\n".join(out.stdout.strip().splitlines()[-20:]),
        load_before=load,
    )


def free_port() -> int:
    """A free port on 127.0.0.1: from GIS_BENCH_PORTS (`first-last`) when set, so runs on a shared machine keep to
    the range they were given (and out of the kernel's outgoing range), else any the kernel hands out."""
    wanted = os.environ.get("GIS_BENCH_PORTS")
    candidates = [0]
    if wanted:
        first, last = (int(n) for n in wanted.split("-"))
        candidates = list(range(first, last + 1))
    for port in candidates:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
            return int(probe.getsockname()[1])
    raise RuntimeError(f"no free port in GIS_BENCH_PORTS={wanted}")


def listening_socket(port: int) -> str:
    """The inode of the IPv4 socket listening on the port (from /proc/net/tcp), or '' if none."""
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[1].endswith(f":{port:04X}") and fields[3] == "0A":  # 0A: LISTEN
            return fields[9]
    return ""


def process_tree(root: int) -> list[int]:
    """The process and all its descendants (from /proc/*/stat's parent ids)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parent = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue  # gone meanwhile
        children.setdefault(parent, []).append(int(stat.parent.name))
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo += children.get(pid, [])
    return found


class Server:
    """A server process in its own process group, stopped with the whole group by stop()."""

    def __init__(self, name: str, args: Sequence[str], port: int, env: Mapping[str, str],
                 log: Path, cwd: Path | None = None) -> None:
        self.name, self.args, self.port, self.env, self.log, self.cwd = name, list(args), port, env, log, cwd
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, ready_path: str, timeout_s: float = 120) -> None:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(self.args, env=dict(self.env), cwd=self.cwd, stdout=log,
                                            stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited ({self.process.returncode}); see {self.log}")
            try:
                with urllib.request.urlopen(self.base + ready_path, timeout=5):
                    return
            except urllib.error.HTTPError:
                return  # it answers: up, whatever it thinks of the path
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.5)
        self.stop()
        raise RuntimeError(f"{self.name} did not answer {ready_path} within {timeout_s:.0f}s; see {self.log}")

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)  # the group this Server started, nothing else
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)

    def http_stack(self) -> dict[str, Any]:
        """What the running server is, read from /proc: its workers (the processes that hold its listening
        socket, less the supervisor that made it for them) and how many of them have httptools' parser and
        uvloop mapped (/proc/PID/maps)."""
        found: dict[str, Any] = {"workers": 0, "httptools": 0, "uvloop": 0, "pids": []}
        if self.process is None:
            return found
        listening = f"socket:[{listening_socket(self.port)}]"
        holders: dict[int, str] = {}
        for pid in process_tree(self.process.pid):
            try:
                if any(os.readlink(fd) == listening for fd in Path(f"/proc/{pid}/fd").iterdir()):
                    holders[pid] = Path(f"/proc/{pid}/maps").read_text(encoding="utf-8", errors="replace")
            except OSError:
                continue  # gone meanwhile
        if len(holders) > 1:
            holders.pop(self.process.pid, None)  # the supervisor: it listens for its workers, serves nothing
        for pid, maps in sorted(holders.items()):
            found["workers"] += 1
            found["httptools"] += "/httptools/" in maps
            found["uvloop"] += "/uvloop/" in maps
            found["pids"].append(pid)
        return found

    def wait_for_workers(self, workers: int, timeout_s: float = 120, steady_s: float = 3) -> dict[str, Any]:
        """Wait until `workers` workers hold the socket with httptools and uvloop loaded, and the same ones for
        `steady_s` (a supervisor replaces a worker that is slow to answer its health check, as a loaded machine
        makes one at start-up). Returns the last reading, whether or not it got there."""
        deadline = time.monotonic() + timeout_s
        steady_since, last = time.monotonic(), self.http_stack()
        while time.monotonic() < deadline:
            time.sleep(0.5)
            now = self.http_stack()
            if now["pids"] != last["pids"] or not (now["workers"] == now["httptools"] == now["uvloop"] == workers):
                steady_since = time.monotonic()
            elif time.monotonic() - steady_since >= steady_s:
                return now
            last = now
        return last

    def __enter__(self) -> "Server":
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()
