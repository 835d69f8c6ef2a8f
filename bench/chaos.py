"""Chaos, measured: 100 clients on 10 keys use the stack through its load balancer for 60 s (pages of items,
next links, tiles, one item, a process, sensor readings posted) while a service node is SIGKILLed, a standby
stopped and the primary restarted. Then: every failed request, every audited read without its audit row,
every acknowledged reading missing from the layer.

    .venv/bin/python -m bench.chaos            # its own stack under .gisdata/chaos; writes docs/reliability.md

tests/test_chaos.py runs the same workload (run_chaos) on a stack of the suite's own and asserts the figures.
Traffic goes to 127.0.0.1 only.
"""

import argparse
import asyncio
import math
import os
import random
import statistics
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import psycopg

from gis.security import keys as keys_
from gis.stack.topology import Stack

ROLES = ("analyst", "analyst", "analyst", "analyst", "pipeline_app", "pipeline_app", "pipeline_app",
         "planner", "planner", "planner")  # ten keys
AUDITED = ("pipe_nodes", "pipelines")  # internal layers the clients read: each 200 has its audit row
THINK_SECONDS = (0.5, 1.5)  # between one answer and a client's next request, as an application would
RECOVERY_SECONDS = 5.0  # after the primary is back, requests may still meet a dead pooled connection
EVENTS = ((10.0, "kill", "node1"), (20.0, "stop", "standby1"), (30.0, "restart", "primary"),
          (45.0, "start", "node1"), (45.0, "start", "standby1"))
SQUARE = {"type": "Polygon", "coordinates": [[[123.40, 41.75], [123.402, 41.75], [123.402, 41.752],
                                              [123.40, 41.752], [123.40, 41.75]]]}
READINGS_FROM = datetime(2024, 1, 1, tzinfo=UTC)  # client n posts from n x 100,000 s on: all in the past


@dataclass(frozen=True)
class Fixtures:
    keys: list[tuple[str, str, str]]  # (role, key id, token)
    sensors: list[str]
    pipelines: list[str]


@dataclass
class Outcome:
    t: float
    kind: str
    status: int | None
    seconds: float
    key_id: str
    error: str | None = None
    audited: str | None = None  # the internal layer a 200 read
    readings: list[str] = field(default_factory=list)  # the fids of the readings posted


@dataclass
class Event:
    at: float
    action: str
    member: str
    done: float = 0.0


@dataclass
class Figures:
    seconds: float
    clients: int
    requests: int
    by_kind: dict[str, int]
    by_status: dict[str, int]
    failed: list[Outcome]
    documented_503: int
    window: tuple[float, float] | None
    latency_ms: dict[str, float]
    audited_reads: int
    audit_rows: int
    audit_lost: int
    readings_acknowledged: int
    readings_stored: int
    readings_refused: int
    readings_lost: int
    events: list[Event]


def prepare(primary_url: str, pepper: str = "") -> Fixtures:
    """Ten keys on the primary, and the ids the clients ask for."""
    with psycopg.connect(primary_url) as conn:
        made = []
        for i, role in enumerate(ROLES):
            record, token = keys_.create_key(conn, f"chaos client key {i}", role, pepper)
            made.append((role, record.key_id, token))
        sensors = [r[0] for r in conn.execute("SELECT fid FROM pipeline.pipe_sensors ORDER BY fid LIMIT 50")]
        pipelines = [r[0] for r in conn.execute("SELECT fid FROM pipeline.pipelines ORDER BY fid LIMIT 200")]
        conn.commit()
    if not sensors or not pipelines:
        raise RuntimeError("the stack's primary has no pipe sensors or pipelines: load the layers first")
    return Fixtures(made, sensors, pipelines)


def _tile(lon: float, lat: float, z: int) -> tuple[int, int]:
    n = 2 ** z
    x = int((lon + 180) / 360 * n)
    y = int((1 - math.asinh(math.tan(math.radians(lat))) / math.pi) / 2 * n)
    return x, y


class Client:
    """One of the hundred: a connection of its own, a key, and what its role does."""

    def __init__(self, number: int, base: str, fixtures: Fixtures, t0: float, out: list[Outcome]) -> None:
        self.number = number
        self.role, self.key_id, token = fixtures.keys[number % len(fixtures.keys)]
        self.http = httpx.AsyncClient(base_url=base, headers={"X-API-Key": token}, timeout=120)
        self.fixtures = fixtures
        self.random = random.Random(number)
        self.t0 = t0
        self.out = out
        self.next_link: str | None = None
        self.posted = 0

    async def request(self, kind: str, method: str, url: str, audited: str | None = None,
                      readings: list[str] | None = None, **kwargs: Any) -> httpx.Response | None:
        started = time.monotonic()
        outcome = Outcome(started - self.t0, kind, None, 0.0, self.key_id, readings=readings or [])
        try:
            response = await self.http.request(method, url, **kwargs)
            await response.aread()
            outcome.status = response.status_code
            if response.status_code >= 400:
                outcome.error = response.text[:300]
            elif audited:
                outcome.audited = audited
        except httpx.HTTPError as exc:
            response = None
            outcome.error = f"{exc.__class__.__name__}: {str(exc)[:200]}"
        outcome.seconds = time.monotonic() - started
        self.out.append(outcome)
        return response

    async def step(self) -> None:
        r = self.random
        if self.next_link and r.random() < 0.5:
            link, self.next_link = self.next_link, None
            layer = "pipe_nodes" if "pipe_nodes" in link else None
            got = await self.request("next page", "GET", link, audited=layer)
            self._remember_next(got)
            return
        choice = r.random()
        if self.role == "pipeline_app" and choice < 0.3:
            await self.post_readings()
        elif self.role == "planner" and choice < 0.08:
            await self.request("process", "POST", "/processes/overlap-check/execution",
                               json={"inputs": {"geometry": SQUARE, "proposed_use": "R"}})
        elif choice < 0.45:
            layer = r.choice(("pipe_nodes", "place_names", "roads")) if self.role != "planner" else "land_use_plan"
            got = await self.request("items page", "GET", f"/collections/{layer}/items", params={"limit": 20},
                                     audited=layer if layer in AUDITED else None)
            self._remember_next(got)
        elif choice < 0.75:
            x, y = _tile(123.43 + r.uniform(-0.1, 0.1), 41.80 + r.uniform(-0.1, 0.1), 13)
            layer = r.choice(("roads", "buildings", "land_use_plan"))
            await self.request("tile", "GET", f"/collections/{layer}/tiles/WebMercatorQuad/13/{y}/{x}")
        elif self.role in ("analyst", "pipeline_app"):
            fid = r.choice(self.fixtures.pipelines)
            await self.request("one item", "GET", f"/collections/pipelines/items/{fid}", audited="pipelines")
        else:
            await self.request("items page", "GET", "/collections/admin_districts/items", params={"limit": 5})

    def _remember_next(self, response: httpx.Response | None) -> None:
        if response is not None and response.status_code == 200:
            links = response.json().get("links", [])
            self.next_link = next((x["href"] for x in links if x.get("rel") == "next"), None)

    async def post_readings(self) -> None:
        sensor = self.fixtures.sensors[self.number % len(self.fixtures.sensors)]
        batch = []
        for _ in range(5):
            self.posted += 1
            at = READINGS_FROM + timedelta(seconds=self.number * 100_000 + self.posted)
            batch.append({"sensor": sensor, "observed_at": at.isoformat(),
                          "value": round(self.random.uniform(0.2, 0.4), 3), "quality": "good"})
        fids = [f"{sensor}@{datetime.fromisoformat(b['observed_at']).strftime('%Y%m%dT%H%M%SZ')}" for b in batch]
        await self.request("readings", "POST", "/api/pipeline/sensor-readings", readings=fids, json={"readings": batch})

    async def run(self, until: float) -> None:
        try:
            while time.monotonic() < until:
                await self.step()
                await asyncio.sleep(self.random.uniform(*THINK_SECONDS))
        finally:
            await self.http.aclose()


def _events(stack: Stack, t0: float, events: list[Event], say: Callable[[str], None]) -> None:
    for event in events:
        time.sleep(max(0.0, t0 + event.at - time.monotonic()))
        event.at = time.monotonic() - t0
        if event.action == "kill":
            pid = stack.kill(event.member)
            say(f"{event.at:5.1f} s  {event.member} SIGKILLed (pid {pid})")
        elif event.action == "restart":
            stack.stop(event.member)
            say(f"{time.monotonic() - t0:5.1f} s  {event.member} stopped")
            stack.start(event.member)
        else:
            getattr(stack, event.action)(event.member)
        event.done = time.monotonic() - t0
        say(f"{event.done:5.1f} s  {event.member}: {event.action} done")


def run_chaos(stack: Stack, base: str, primary_url: str, fixtures: Fixtures, seconds: float = 60.0,
              clients: int = 100, say: Callable[[str], None] = print) -> Figures:
    """The workload and the events at once; then the figures, checked against the primary."""
    events = [Event(at, action, member) for at, action, member in EVENTS if at < seconds]
    out: list[Outcome] = []
    t0 = time.monotonic()
    chaos = threading.Thread(target=_events, args=(stack, t0, events, say), name="chaos")
    chaos.start()

    async def everyone() -> None:
        crowd = [Client(i, base, fixtures, t0, out) for i in range(clients)]
        await asyncio.gather(*(c.run(t0 + seconds) for c in crowd))

    asyncio.run(everyone())
    chaos.join()
    return summarise(out, events, primary_url, fixtures, time.monotonic() - t0, clients)


def _window(events: list[Event]) -> tuple[float, float] | None:
    restart = next((e for e in events if e.action == "restart"), None)
    return (restart.at, restart.done + RECOVERY_SECONDS) if restart else None


def _stored(primary_url: str, fids: list[str]) -> set[str]:
    with psycopg.connect(primary_url) as conn:
        rows = conn.execute("SELECT fid FROM pipeline.sensor_readings WHERE fid = ANY(%s) UNION "
                            "SELECT fid FROM pipeline.sensor_readings_history WHERE fid = ANY(%s)",
                            (fids, fids)).fetchall()
    return {r[0] for r in rows}


def summarise(out: list[Outcome], events: list[Event], primary_url: str, fixtures: Fixtures, seconds: float,
              clients: int) -> Figures:
    window = _window(events)

    def documented(o: Outcome) -> bool:
        # 503 is the documented answer while the primary is away: writes (audit rows, readings, jobs) fail closed;
        # a request counts when it was under way at any moment of the restart
        return o.status == 503 and window is not None and o.t <= window[1] and o.t + o.seconds >= window[0]

    failed = [o for o in out if (o.status is None or o.status >= 400) and not documented(o)]
    ok = [o.seconds * 1000 for o in out if o.status is not None and o.status < 400]
    quantiles = statistics.quantiles(ok, n=100) if len(ok) > 1 else [0.0] * 99
    audited = Counter(o.key_id for o in out if o.audited)
    key_ids = [k[1] for k in fixtures.keys]
    with psycopg.connect(primary_url) as conn:
        rows = dict(conn.execute("SELECT key_id, count(*) FROM ops.audit_log WHERE action = 'read' "
                                 "AND key_id = ANY(%s) AND layer_id = ANY(%s) GROUP BY key_id",
                                 (key_ids, list(AUDITED))).fetchall())
    lost_audit = sum(max(0, n - int(rows.get(k, 0))) for k, n in audited.items())
    acknowledged = [f for o in out if o.kind == "readings" and o.status == 200 for f in o.readings]
    refused = sum(len(o.readings) for o in out if o.kind == "readings" and o.status != 200)
    stored = _stored(primary_url, acknowledged) if acknowledged else set()
    return Figures(
        seconds=seconds, clients=clients, requests=len(out), by_kind=dict(Counter(o.kind for o in out)),
        by_status=dict(Counter(str(o.status or "no answer") for o in out)), failed=failed,
        documented_503=sum(1 for o in out if documented(o)), window=window,
        latency_ms={"p50": quantiles[49], "p99": quantiles[98], "max": max(ok, default=0.0)},
        audited_reads=sum(audited.values()), audit_rows=sum(int(v) for v in rows.values()), audit_lost=lost_audit,
        readings_acknowledged=len(acknowledged), readings_stored=len(stored), readings_refused=refused,
        readings_lost=len(set(acknowledged) - stored), events=events)


def markdown(f: Figures, command: str, topology: str) -> str:
    window = f"{f.window[0]:.1f}–{f.window[1]:.1f} s" if f.window else "none"
    lines = [
        "# Reliability: chaos, measured",
        "",
        f"Measured with `{command}` on this machine (2 cores, everything on it at once: {topology}; "
        f"load average {os.getloadavg()[0]:.1f} at the end, other work on the machine included).",
        f"{f.clients} concurrent clients on 10 API keys (4 analysts, 3 pipeline applications, 3 planners) used the "
        f"stack through HAProxy for {f.seconds:.0f} s: pages of items and their next links, vector tiles, one "
        "item, the overlap-check process (synchronous), sensor readings posted in batches of 5. Meanwhile:",
        "",
        "| at | what |",
        "| --- | --- |",
        *[f"| {e.at:.1f} s (done {e.done:.1f} s) | {e.action} {e.member} |" for e in f.events],
        "",
        "| figure | value |",
        "| --- | --- |",
        f"| requests | {f.requests:,} ({f.requests / f.seconds:.0f}/s) |",
        f"| by kind | {', '.join(f'{k} {v:,}' for k, v in sorted(f.by_kind.items()))} |",
        f"| by status | {', '.join(f'{k}: {v:,}' for k, v in sorted(f.by_status.items()))} |",
        f"| **failed requests** (anything but a 2xx/3xx, other than a 503 while the primary restarted) | "
        f"**{len(f.failed)}** |",
        f"| documented 503s (primary restarting, {window}) | {f.documented_503:,} |",
        f"| latency of answered requests | p50 {f.latency_ms['p50']:.0f} ms, p99 {f.latency_ms['p99']:.0f} ms, "
        f"max {f.latency_ms['max']:.0f} ms |",
        f"| audited reads answered 200 / audit rows of those keys / **lost audit rows** | {f.audited_reads:,} / "
        f"{f.audit_rows:,} / **{f.audit_lost}** |",
        f"| readings acknowledged (200) / stored / refused with an error the client saw / **lost** | "
        f"{f.readings_acknowledged:,} / {f.readings_stored:,} / {f.readings_refused:,} / **{f.readings_lost}** |",
        "",
        "How each holds:",
        "- A SIGKILLed node costs no request: HAProxy sends a request whose connection fails or whose node closes it "
        "without an answer to another node (`retry-on conn-failure empty-response junk-response`, `option "
        "redispatch`; bodies buffered, so POSTs too: readings are idempotent by sensor and instant) and stops "
        "sending it new ones after two failed health checks (`deploy/haproxy/haproxy.cfg.j2`).",
        "- A stopped standby costs no request: reads go on from the other standby or the primary "
        "(libpq multi-host `GIS_DATABASE_READ_URL`).",
        "- While the primary restarts, every request that must write (an audit row of an internal layer, readings, a "
        "job, a rate budget falls back to the node's own) answers 503 with `Retry-After` — the documented answer "
        "(docs/security.md: restricted reads fail closed) — and a reading refused so is one the client knows to "
        "send again. Audit rows are written before the answer, so an answered read always has its row; a "
        "request HAProxy sent twice may have two.",
        "",
        "The same workload runs in the suite (`tests/test_chaos.py`, part of `make test`), asserting 0 failed "
        "requests, 0 lost audit rows and 0 lost readings.",
    ]
    if f.failed:
        by = Counter(f"{o.kind}: {o.status or 'no answer'} {(o.error or '')[:100]}" for o in f.failed)
        lines += ["", "Failed requests, by kind and answer:", ""]
        lines += [f"- {n} x {what}" for what, n in by.most_common(20)]
        lines += ["", "Failed requests (first 20):", ""]
        lines += [f"- {o.t:.1f} s (for {o.seconds:.1f} s) {o.kind}: {o.status or 'no answer'} {(o.error or '')[:160]}"
                  for o in f.failed[:20]]
    return "\n".join(lines) + "\n"


def main() -> None:  # pragma: no cover - the measurement itself
    from gis.settings import Settings
    from gis.stack.topology import Plan, migrate_primary

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8160, help="the load balancer's port (nodes on the next ones)")
    parser.add_argument("--db-port", type=int, default=57170, help="the stack's primary (standbys on the next ones)")
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--out", default="docs/reliability.md")
    args = parser.parse_args()
    root = Path.cwd()
    settings = Settings(cluster_dir=root / ".gisdata" / "chaos" / "pg", cluster_port=args.db_port,
                        rasters_dir=root / ".gisdata" / "chaos" / "rasters")
    stack = Stack(settings, root)
    stack.primary.start()
    print(f"primary: migrations {migrate_primary(settings)}")
    _load(settings)
    plan = Plan(args.port, (args.port + 1, args.port + 2, args.port + 3), (args.db_port + 1, args.db_port + 2), 1)
    try:
        stack.up(plan)
        figures = run_chaos(stack, f"http://127.0.0.1:{args.port}", stack.primary.url(), prepare(stack.primary.url()),
                            args.seconds)
    finally:
        stack.down()
    text = markdown(figures, "python -m bench.chaos", "a primary, 2 streaming standbys, 3 service nodes, "
                    "1 job worker, HAProxy and the 100 clients")
    Path(args.out).write_text(text, encoding="utf-8")
    print(text)


def _load(settings: Any) -> None:  # pragma: no cover - part of main
    """Every sample layer through the real refresh (skipped by checksum when already loaded), and the styles."""
    import subprocess
    import sys

    env = {**os.environ, "GIS_CLUSTER_DIR": str(settings.cluster_dir), "GIS_CLUSTER_PORT": str(settings.cluster_port),
           "GIS_RASTERS_DIR": str(settings.rasters_dir)}
    env.pop("GIS_DATABASE_URL", None)
    gis = str(Path(sys.executable).parent / "gis")
    subprocess.run([gis, "refresh", "--all", "--quiet"], env=env, check=True)
    subprocess.run([gis, "styles", "publish"], env=env, check=True)


if __name__ == "__main__":
    main()
