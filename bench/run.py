"""`make bench`: build the bench-scale city, time the refresh against ogr2ogr, then the OGC API against peers,
then the burst analysis (bench/burst.py; `--only burst` runs just that, `--skip-burst` leaves it out).

Everything it needs it installs: Debian's wrk (through .ci/ensure-debian-packages), the bench-scale
deliveries (data-samples/generate.py), and tipg and pygeoapi from PyPI, each in its own venv under
bench/.peers/. Results go to bench/results/*.json and docs/benchmarks.md.
"""

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import psycopg  # noqa: E402

from bench import api, burst, dblimit, first_view, history, peers, refresh, report, wrk  # noqa: E402
from bench.procs import free_port  # noqa: E402
from gis.db.cluster import Cluster  # noqa: E402
from gis.layers import load_registry  # noqa: E402
from gis.settings import Settings  # noqa: E402

RESULTS = ROOT / "bench" / "results"
PEERS_DIR = ROOT / "bench" / ".peers"
SAMPLES = ROOT / "data-samples" / "generated" / "bench"
DEBIAN_PACKAGES = ("wrk", "time", "gdal-bin", "postgresql", "postgresql-postgis")


def say(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", flush=True)


def ensure_debian_packages() -> None:
    subprocess.run([str(ROOT / ".ci" / "ensure-debian-packages"), *DEBIAN_PACKAGES], check=True)


def ensure_samples() -> None:
    generator = ROOT / "data-samples" / "generate.py"
    done = SAMPLES / ".done"
    layers = list((ROOT / "layers").glob("*/*.yml"))
    newest = max(p.stat().st_mtime for p in [generator, *layers])
    if done.is_file() and done.stat().st_mtime >= newest:
        return
    say(f"generating the bench-scale deliveries into {SAMPLES.relative_to(ROOT)} (once)")
    subprocess.run([sys.executable, str(generator), "--scale", "bench", "--out", str(SAMPLES)], check=True, cwd=ROOT)
    done.touch()


def machine() -> dict[str, str]:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor() or "unknown")
    mem_kib = next(int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines()
                   if line.startswith("MemTotal"))
    gdal = subprocess.run(["ogr2ogr", "--version"], capture_output=True, text=True, check=False).stdout.strip()
    return {"CPU": f"{cpu}, {os.cpu_count()} cores", "RAM": f"{mem_kib / 2**20:.0f} GiB",
            "OS": platform.platform(), "Python": platform.python_version(), "GDAL": gdal or "unknown"}


def database_versions(url: str) -> dict[str, str]:
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT current_setting('server_version'), postgis_lib_version()").fetchone()
    return {"PostgreSQL": str(row[0]), "PostGIS": str(row[1])} if row else {}


def bench_url(settings: Settings, recreate: bool) -> str:
    cluster = Cluster(settings)
    say(cluster.start())
    if recreate:
        refresh.recreate_database(cluster.url("postgres"))
    return cluster.url(refresh.BENCH_DATABASE)  # a postgresql:// URL, which every peer understands


def prepare_for_reads(url: str) -> None:
    """The same starting point for every server: every table of this checkout's layers (a database loaded by
    an older checkout lacks newer layers, which pygeoapi refuses to start without), statistics and visibility
    map up to date."""
    from gis.db.migrate import migrate

    registry = load_registry(ROOT / "layers", ROOT / "styles")
    with psycopg.connect(url) as conn:
        migrate(conn, registry)
        conn.commit()
    # The generalised tile copy a refresh leaves (a database loaded by an older checkout has none built yet).
    from gis import tiles as mvt
    from gis import tiles_generalised

    started = time.monotonic()
    tiles_generalised.catch_up(url, registry[api.LAYER], mvt.drawn_fields(registry[api.LAYER], ROOT / "styles"))
    say(f"generalised tile copy of {api.LAYER} caught up in {time.monotonic() - started:.1f} s")
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("VACUUM (ANALYZE) pipeline.pipelines")
        conn.execute("VACUUM (ANALYZE) pipeline.pipelines_history")
        conn.execute("VACUUM (ANALYZE) ops.layer_stats")


def measure_database(url: str, measurements: list[api.Measurement], p: api.Probe, settings: wrk.WrkSettings,
                     runs: int) -> dict[str, dict[str, object]]:
    """pgbench with the statement our service runs for each of its measured requests (bench/dblimit.py)."""
    spec = load_registry(ROOT / "layers", ROOT / "styles")[api.LAYER]
    from gis import tiles as mvt

    drawn = mvt.drawn_fields(spec, ROOT / "styles")
    found: dict[str, dict[str, object]] = {}
    for m in measurements:
        case = next(c for c in api.CASES if c.key == m.case)
        if m.server not in ("ours", "ours-nocache") or not m.result or not case.database or m.case in found:
            continue
        tiles = (p.tiles or {}).get(case.zoom) if case.zoom is not None else None
        with psycopg.connect(url) as conn:
            statements = dblimit.statements_for(conn, spec, m.url or "", tiles, drawn)
        own = api.case_settings(case, settings)
        tps = sorted(dblimit.run(url, statements, own.connections, own.duration_s).tps for _ in range(runs))
        found[m.case] = {"tps": tps[len(tps) // 2], "runs": tps, "connections": own.connections,
                         "statements": len(statements)}
        say(f"  database alone, {m.case}: {tps[len(tps) // 2]:,.1f} statements/s (runs {tps})")
    return found


def run_api(url: str, servers: list[str], settings: wrk.WrkSettings, warmup_s: int, runs: int,
            instants: list[str] | None, only: frozenset[str] | None = None) -> dict[str, Any]:
    started = time.time()
    registry = load_registry(ROOT / "layers", ROOT / "styles")
    gis_settings = Settings()
    prepare_for_reads(url)
    p = api.probe(url, instants)
    say(f"probe: centre {p.centre[0]:.4f},{p.centre[1]:.4f}; bbox with {p.bbox_rows} segments; tile {p.tile}")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GIS_", "PYGEOAPI_", "TIPG_"))}
    work = RESULTS / "servers"
    measurements: list[api.Measurement] = []
    versions: dict[str, str] = database_versions(url)
    stacks: dict[str, dict[str, Any]] = {}
    seconds: dict[str, float] = {}
    credentials = peers.bench_api_key(ROOT, url, env) if {"ours", "ours-nocache"} & set(servers) else {}
    if credentials:
        say("ours: requests carry an API key of role pipeline_app (pipelines is an internal layer)")
    for name in servers:
        began = time.monotonic()
        port = free_port()
        if name in ("ours", "ours-nocache"):
            venv = ROOT / ".venv"
            server = peers.our_server(ROOT, work, url, port, env, tile_cache=name == "ours")
            # ours-nocache: the same service with its tile cache off, for the tiles' compute path only
            tiles = frozenset(c.key for c in api.CASES if c.zoom is not None) if name == "ours-nocache" else None
            endpoint = peers.Endpoint(name, server, api.LAYER, "zyx", cases=tiles, headers=credentials)
        elif name == "tipg":
            venv = peers.ensure_venv(PEERS_DIR, peers.TIPG, say)
            server = peers.tipg_server(venv, work, registry, url, port, env)
            endpoint = peers.Endpoint("tipg", server, f"pipeline.{api.LAYER}", "zxy")
        elif name == "pygeoapi":
            venv = peers.ensure_venv(PEERS_DIR, peers.PYGEOAPI, say)
            try:  # its configuration is validated and its OpenAPI document made before it starts
                server = peers.pygeoapi_server(venv, work, registry, url, port, gis_settings.city_extent, env)
            except subprocess.CalledProcessError as exc:
                say(f"pygeoapi not measured: {' '.join(exc.cmd[1:3])} failed: {(exc.stderr or b'')[-300:]!r}")
                continue
            # pygeoapi reads a CRS84 bbox into EPSG:4490's lat/lon order and finds nothing; given as its
            # storage CRS, it passes the numbers through as PostGIS's lon/lat and answers right.
            endpoint = peers.Endpoint("pygeoapi", server, api.LAYER, "zyx", item_suffix="f=json",
                                      tile_suffix="f=mvt", bbox_crs=peers.EPSG4490)
        else:
            raise SystemExit(f"unknown server {name!r}")
        family = "ours" if name.startswith("ours") else name
        packages = peers.versions(peers.freeze(venv), (*peers.OWN[family], *peers.STACK))
        say(f"starting {name} on {server.base} ({', '.join(f'{k} {v}' for k, v in packages.items())})")
        with server:
            try:
                server.start("/collections")
            except RuntimeError as exc:
                say(f"{name} not measured: {exc}")
                continue
            # Every worker up before the first case (on a loaded machine uvicorn's supervisor may replace one
            # that starts slowly), and any worker replaced while the cases ran is counted.
            stack = server.wait_for_workers(peers.WORKERS)
            say(f"  {name}: {stack['workers']} workers {stack['pids']}, httptools in {stack['httptools']}, "
                f"uvloop in {stack['uvloop']}")
            measurements += api.measure_endpoint(endpoint, p, settings, warmup_s, url, say, runs, only)
            replaced = len(set(stack["pids"]) - set(server.http_stack()["pids"]))
        if replaced:
            say(f"  {name}: {replaced} worker(s) replaced by the supervisor while the cases ran")
        stacks[name] = {"packages": packages, "workers": stack["workers"], "httptools": stack["httptools"],
                        "uvloop": stack["uvloop"], "replaced": replaced,
                        "command": " ".join(Path(a).name if a.startswith("/") else a for a in server.args)}
        api.quiesce(url, wait_s=5)
        seconds[name] = round(time.monotonic() - began, 1)
    say("the database alone: pgbench with our statements")
    began = time.monotonic()
    database = measure_database(url, measurements, p, settings, runs)
    seconds["database alone"] = round(time.monotonic() - began, 1)
    return {
        "runs": runs,
        "database": database,
        "workers": peers.WORKERS,
        "wrk": asdict(settings),
        "warmup_s": warmup_s,
        "probe": asdict(p),
        "versions": versions,
        "stacks": stacks,
        "seconds": seconds,
        "credentials": bool(credentials),
        "measurements": [m.as_dict() for m in measurements],
        "started": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(started)),
        "finished": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "uptime": Path("/proc/loadavg").read_text().split()[:3],
    }


def merge_api(previous: dict[str, Any] | None, now: dict[str, Any], servers: list[str],
              only: frozenset[str] | None, command: str) -> dict[str, Any]:
    """A run of some cases (--cases) replaces those cases' figures in the last results and keeps the rest;
    `subsets` says which cases came from which run (command, time, load), so the report can say so."""
    run = {"command": command, "cases": sorted(only) if only else "all", "servers": servers,
           "started": now["started"], "finished": now["finished"], "loadavg": now["uptime"]}
    if only is None or previous is None:
        return now | {"subsets": [run]}
    fresh = {(m["server"], m["case"]) for m in now["measurements"]}
    kept = [m for m in previous.get("measurements", []) if (m["server"], m["case"]) not in fresh]
    return previous | {"measurements": [*kept, *now["measurements"]],
                       "database": previous.get("database", {}) | now["database"],
                       "stacks": previous.get("stacks", {}) | now["stacks"], "seconds": now["seconds"],
                       "subsets": [*previous.get("subsets", []), run], "versions": now["versions"]}


class Phases:
    """Wall time of each part of this invocation, for the report (`bench/results/run.json`)."""

    def __init__(self, command: str) -> None:
        self.command, self.began = command, time.monotonic()
        self.seconds: dict[str, float] = {}
        self.started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())

    def timed(self, name: str, work: Any) -> Any:
        began = time.monotonic()
        try:
            return work()
        finally:
            self.seconds[name] = round(time.monotonic() - began, 1)

    def as_dict(self) -> dict[str, Any]:
        return {"command": self.command, "started": self.started,
                "finished": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                "seconds": round(time.monotonic() - self.began, 1), "phases": self.seconds,
                "loadavg": Path("/proc/loadavg").read_text().split()[:3]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skip-refresh", action="store_true", help="reuse the loaded gis_bench database")
    parser.add_argument("--skip-api", action="store_true")
    parser.add_argument("--servers", default="ours,ours-nocache,tipg,pygeoapi",
                        help="comma-separated: ours,ours-nocache,tipg,pygeoapi")
    parser.add_argument("--duration", type=int, default=api.DURATION_S,
                        help=f"seconds of each timed wrk (and pgbench) run (default {api.DURATION_S})")
    parser.add_argument("--warmup", type=int, default=api.WARMUP_S,
                        help=f"seconds of wrk before a case's timed runs (default {api.WARMUP_S})")
    parser.add_argument("--runs", type=int, default=api.RUNS, help="timed runs per case (the median is reported)")
    parser.add_argument("--skip-history", action="store_true",
                        help="no ten deliveries after the refresh benchmark (as-of cases are then not asked)")
    parser.add_argument("--deliveries", type=int, default=history.DELIVERIES,
                        help="how many of the ten deliveries to load (fewer: a quick changed-delivery figure)")
    parser.add_argument("--skip-first-view", action="store_true",
                        help="leave out the web map's first view in headless Chromium (bench/first_view.py)")
    parser.add_argument("--skip-burst", action="store_true", help="leave out the burst-analysis benchmark")
    parser.add_argument("--only", choices=["burst"], help="run only this benchmark (bench/burst.py, its own database)")
    parser.add_argument("--cases", help="API cases to measure, comma-separated groups (items, bbox, item, filter, "
                        "asof, tiles, deep) or case keys; their figures replace those of the last results, the "
                        "rest are kept (default: every case)")
    args = parser.parse_args(argv)

    command = " ".join(["bench/run.py", *(argv if argv is not None else sys.argv[1:])])
    phases = Phases(command)
    RESULTS.mkdir(parents=True, exist_ok=True)
    ensure_debian_packages()
    phases.timed("bench deliveries generated", ensure_samples)
    if args.only == "burst":
        burst.run(None, skip_load=False, samples=burst.SAMPLES_DEFAULT, passes=burst.PASSES_DEFAULT)
        return 0
    settings = Settings(database_url=None)  # the embedded cluster, whatever GIS_DATABASE_URL says
    url = bench_url(settings, recreate=not args.skip_refresh)

    refresh_file, api_file, history_file = RESULTS / "refresh.json", RESULTS / "api.json", RESULTS / "history.json"
    try:
        if not args.skip_refresh:
            say("refresh benchmark: ogr2ogr, first refresh, unchanged rerun (checksum), unchanged rerun (--force)")
            log = RESULTS / "refresh.log"
            log.write_text("", encoding="utf-8")
            result = phases.timed("refresh against ogr2ogr", lambda: refresh.run(ROOT, url, SAMPLES, log))
            refresh_file.write_text(json.dumps(result.as_dict(), indent=2), encoding="utf-8")
            say(f"refresh: ogr2ogr {result.ogr2ogr.seconds}s, first {result.first.seconds}s, unchanged "
                f"{result.unchanged_checksum.seconds}s (checksum) / {result.unchanged_force.seconds}s (--force)")
        if not args.skip_history and (not args.skip_refresh or not history_file.is_file()):
            say(f"history: {args.deliveries} successive deliveries of the pipelines (5% changed, 1% removed, "
                "1.5% added each)")
            made = phases.timed(f"{args.deliveries} deliveries", lambda: history.run(
                ROOT, url, SAMPLES / "pipeline" / "pipelines.gpkg", RESULTS / "history", say, args.deliveries))
            history_file.write_text(json.dumps(made.as_dict(), indent=2), encoding="utf-8")
        instants = json.loads(history_file.read_text())["instants"] if history_file.is_file() else None
        if not args.skip_api:
            servers = [s.strip() for s in args.servers.split(",") if s.strip()]
            say(f"API benchmark: {', '.join(servers)}")
            only = api.selected_cases(args.cases)
            result_api = phases.timed("OGC API", lambda: run_api(
                url, servers, wrk.WrkSettings(duration_s=args.duration), args.warmup, args.runs, instants, only))
            previous = json.loads(api_file.read_text()) if api_file.is_file() else None
            api_file.write_text(json.dumps(merge_api(previous, result_api, servers, only, command), indent=2),
                                encoding="utf-8")
        if not args.skip_api and not args.skip_first_view:
            say("the web map's first view of the bench city: headless Chromium, our tile cache off")
            view = phases.timed("web map first view", lambda: first_view.measure(url, say=say))
            say(f"first view: median {view.median:.2f} s (runs {view.seconds})")
            (RESULTS / "first_view.json").write_text(json.dumps(view.as_dict(), indent=2), encoding="utf-8")
        if not args.skip_burst:
            say("burst benchmark: the bench-scale network in gis_burst_bench, library and HTTP")
            phases.timed("burst analysis", lambda: burst.run(None, skip_load=False, samples=burst.SAMPLES_DEFAULT,
                                                               passes=burst.PASSES_DEFAULT))
    finally:  # what was measured is written even if a later part failed
        (RESULTS / "run.json").write_text(json.dumps(phases.as_dict(), indent=2), encoding="utf-8")
        write_report(refresh_file, api_file, history_file)
    say(f"done in {phases.as_dict()['seconds'] / 60:.1f} min: docs/benchmarks.md")
    return 0


def write_report(refresh_file: Path, api_file: Path, history_file: Path) -> None:
    def read(path: Path) -> dict[str, Any] | None:
        return json.loads(path.read_text()) if path.is_file() else None

    report.write(ROOT / "docs" / "benchmarks.md", machine(), read(refresh_file), read(api_file), [],
                 read(history_file), read(RESULTS / "run.json"), read(RESULTS / "first_view.json"))


if __name__ == "__main__":
    sys.exit(main())
