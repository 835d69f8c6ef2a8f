"""Database and service CPU per request, per endpoint: the numbers behind docs/scaling.md's capacity model.

Runs one `gis serve` worker against the database named by the environment (GIS_DATABASE_URL, else the
embedded cluster, which must be running and loaded), sends each endpoint N sequential requests, and reads
the CPU time (utime + stime from /proc) the PostgreSQL server's processes and the service process spent.
Tile and key caches are off so every request pays its database work.

    .venv/bin/python bench/capacity.py [--requests 300] [--port 8159] [--replica NAME] [--out FILE]

With --replica NAME (an embedded standby, `gis db replica create`) the service reads through it
(GIS_DATABASE_READ_URL) and the standby's CPU is counted apart from the primary's: what a read costs the
primary once reads are offloaded (the version lookup, the audit row) and what it costs a standby.
"""

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from gis.db.cluster import Cluster  # noqa: E402
from gis.db.replicas import Replicas, read_url  # noqa: E402
from gis.settings import Settings  # noqa: E402

TICK = os.sysconf("SC_CLK_TCK")


def _cpu_seconds(pids: list[int]) -> float:
    """CPU of these processes; for the first (a postmaster) also of its children that have exited (cutime,
    cstime: backends of connections the pool renewed), so nothing done during the run is lost."""
    total = 0
    for n, pid in enumerate(pids):
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except FileNotFoundError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of the whole line)
        if n == 0:
            total += int(fields[13]) + int(fields[14])  # cutime, cstime
    return total / TICK


def _server_pids(postmaster: int) -> list[int]:
    children = subprocess.run(["ps", "-o", "pid=", "--ppid", str(postmaster)], capture_output=True, text=True)
    return [postmaster, *(int(p) for p in children.stdout.split())]  # the postmaster first


def _endpoints(key: str) -> list[tuple[str, list[str], dict[str, str]]]:
    tiles = [f"/collections/buildings/tiles/WebMercatorQuad/14/{y}/{x}"
             for x in range(13805, 13815) for y in range(6090, 6100)]
    return [
        ("items page, 10 features (public)", ["/collections/roads/items?limit=10"], {}),
        ("items page, 100 features (public)", ["/collections/buildings/items?limit=100"], {}),
        ("one feature", ["/collections/roads/items/R000001"], {}),
        ("vector tile z14 (buildings)", tiles, {}),
        ("collections list", ["/collections?f=json"], {}),
        ("items page, 10 features, audited (internal)", ["/collections/pipelines/items?limit=10"],
         {"X-API-Key": key}),
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--port", type=int, default=8159)
    parser.add_argument("--key", default=os.environ.get("GIS_BENCH_KEY", ""),
                        help="an API key that reads pipelines (the audited endpoint)")
    parser.add_argument("--replica", help="an embedded standby to read through (its CPU counted apart)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "capacity.json")
    args = parser.parse_args()
    settings = Settings()
    status = Cluster(settings).status()
    if not status.running or status.pid is None:
        print("capacity: the embedded cluster is not running ('gis db start')", file=sys.stderr)
        return 1
    env = {**os.environ, "GIS_HTTP_RATE_PER_SECOND": "0", "GIS_TILE_CACHE_MIB": "0",
           "GIS_AUTH_KEY_CACHE_SECONDS": "0", "GIS_SERVE_ACCESS_LOG": "false"}
    standby_pid = None
    if args.replica:
        env["GIS_DATABASE_READ_URL"] = read_url(settings, [args.replica])
        standby_pid = Replicas(settings).status(args.replica).pid
    service = subprocess.Popen([sys.executable, "-m", "uvicorn", "services.asgi:app_from_environment", "--factory",
                                "--port", str(args.port), "--log-level", "warning"], cwd=ROOT, env=env)
    url = f"http://127.0.0.1:{args.port}"
    results = []
    try:
        with httpx.Client(base_url=url, timeout=30) as client:
            deadline = time.monotonic() + 90
            while True:
                try:
                    if client.get("/readyz").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError("the service did not become ready")
                time.sleep(0.3)
            for name, paths, headers in _endpoints(args.key):
                for path in paths[:5]:  # warm: connections made, statements prepared
                    client.get(path, headers=headers).raise_for_status()
                def standby():
                    return (_cpu_seconds(_server_pids(standby_pid)) if standby_pid else 0.0)
                db0, app0, t0 = _cpu_seconds(_server_pids(status.pid)), _cpu_seconds([service.pid]), time.monotonic()
                sb0 = standby()
                for i in range(args.requests):
                    client.get(paths[i % len(paths)], headers=headers).raise_for_status()
                elapsed = time.monotonic() - t0
                db = _cpu_seconds(_server_pids(status.pid)) - db0
                app = _cpu_seconds([service.pid]) - app0
                sb = standby() - sb0
                results.append({"endpoint": name, "path": paths[0], "requests": args.requests,
                                "db_cpu_ms": round(db * 1000 / args.requests, 2),
                                "standby_cpu_ms": round(sb * 1000 / args.requests, 2),
                                "service_cpu_ms": round(app * 1000 / args.requests, 2),
                                "latency_ms": round(elapsed * 1000 / args.requests, 2)})
                got = results[-1]
                print(f"{name:<46} primary {got['db_cpu_ms']:>6} ms  standby {got['standby_cpu_ms']:>6} ms  "
                      f"service {got['service_cpu_ms']:>6} ms  wall {got['latency_ms']:>6} ms per request", flush=True)
    finally:
        service.terminate()
        service.wait(timeout=30)
    args.out.write_text(json.dumps({"cpu_count": os.cpu_count(), "replica": args.replica, "results": results},
                                   indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
