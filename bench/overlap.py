"""Planning benchmarks: overlap-check latency and plan-against-plan speed at bench scale.

    .venv/bin/python bench/overlap.py                 # the embedded cluster, database gis_overlap_bench
    .venv/bin/python bench/overlap.py --url URL       # another server (the databases are made on it)
    .venv/bin/python bench/overlap.py --skip-load     # reuse the loaded databases

1. gis_overlap_bench: the bench-scale deliveries of every layer the rules read, loaded by the real
   refresh (data-samples/generated/bench: about 1,000,000 pipe segments, 17,000 plan parcels).
2. The service is started on it; every construction project (400) is checked through
   POST /api/planning/overlap-checks, as a project fid and as a GeoJSON geometry, after two warm-up
   passes; the server-side time comes from the response's Server-Timing header (input to report).
3. The two configured plan-against-plan checks on the same data, then land_use_vs_farmland on a
   synthetic pair of 302,500 polygons a side (gis_overlap_synth, rows written by SQL, not by refresh).
Results: bench/results/overlap.json and the "Planning" section of docs/benchmarks.md.
"""

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
import psycopg  # noqa: E402

from bench.harness import (  # noqa: E402
    DOC,
    bench_database,
    load_layers,
    machine,
    our_service,
    row_counts,
    server_url,
    write_section,
)
from bench.peers import bench_api_key  # noqa: E402
from gis.analysis.plan_conflicts import run_plan_conflicts  # noqa: E402
from gis.analysis.rules import default_rules_path, load_rules  # noqa: E402
from gis.db.migrate import migrate  # noqa: E402
from gis.layers import load_registry  # noqa: E402
from gis.settings import Settings  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "overlap.json"
BEGIN, END = "<!-- planning:begin -->", "<!-- planning:end -->"
BENCH_DB, SYNTH_DB = "gis_overlap_bench", "gis_overlap_synth"
SYNTH_SIDE = 550  # cells a side: 302,500 polygons per layer


def say(message: str) -> None:
    print(f"[overlap {time.strftime('%H:%M:%S')}] {message}", flush=True)


def load_bench(url: str, settings: Settings) -> None:
    registry = load_registry(ROOT / "layers", ROOT / "styles")
    rules = load_rules(default_rules_path(ROOT / "layers"), registry)
    needed = sorted(set(rules.layers) | ({rules.projects.layer} if rules.projects else set()))
    load_layers(url, registry, [registry[layer_id] for layer_id in needed], settings, say)


def load_synthetic(url: str) -> None:
    """Two offset, rotated grids of parcels over 30 km: every cell of one overlaps two to four of the other."""
    registry = load_registry(ROOT / "layers", ROOT / "styles")
    with psycopg.connect(url) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS postgis")
        conn.commit()
        migrate(conn, registry)
        cell = 30000.0 / SYNTH_SIDE
        params = {"n": SYNTH_SIDE - 1, "c": cell, "x0": 515000.0, "y0": 4610000.0}
        conn.execute(
            "INSERT INTO planning.land_use_plan (fid, land_use_code, plan_name, geom, valid_from, row_hash, "
            "refresh_id) "
            "SELECT format('S-%%s-%%s', i, j), (ARRAY['R','A','B','M','W','S','U','G'])[1 + (i * 7 + j * 3) %% 8], "
            "'synthetic', ST_Transform(ST_SetSRID(ST_MakeEnvelope(%(x0)s + i * %(c)s, %(y0)s + j * %(c)s, "
            "%(x0)s + (i + 0.9) * %(c)s, %(y0)s + (j + 0.85) * %(c)s), 4550), 4490), '2020-01-01', '\\x00', 0 "
            "FROM generate_series(0, %(n)s) i, generate_series(0, %(n)s) j", params)
        conn.execute(
            "INSERT INTO planning.basic_farmland (fid, parcel_code, geom, valid_from, row_hash, refresh_id) "
            "SELECT format('F-%%s-%%s', i, j), format('%%s%%s', i, j), ST_Transform(ST_SetSRID(ST_Rotate("
            "ST_MakeEnvelope(%(x0)s + (i + 0.5) * %(c)s, %(y0)s + (j + 0.4) * %(c)s, %(x0)s + (i + 1.3) * %(c)s, "
            "%(y0)s + (j + 1.2) * %(c)s), radians(12), %(x0)s + (i + 0.9) * %(c)s, %(y0)s + (j + 0.8) * %(c)s), "
            "4550), 4490), '2020-01-01', '\\x00', 0 "
            "FROM generate_series(0, %(n)s) i, generate_series(0, %(n)s) j", params)
        conn.commit()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE planning.land_use_plan")
        conn.execute("VACUUM ANALYZE planning.basic_farmland")


def _percentiles(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {"n": len(ordered), "p50": round(statistics.median(ordered), 2),
            "p90": round(ordered[int(0.9 * (len(ordered) - 1))], 2),
            "p99": round(ordered[int(0.99 * (len(ordered) - 1))], 2), "max": round(ordered[-1], 2)}


def measure_latency(url: str, settings: Settings, passes: int) -> dict[str, Any]:
    with psycopg.connect(url) as conn:
        rows = conn.execute("SELECT fid, ST_AsGeoJSON(geom, 9)::json, proposed_use "
                            "FROM planning.construction_projects ORDER BY fid").fetchall()
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIS_")}
    # A planner: construction projects and the constraint layers are internal, and an anonymous check would
    # leave those rules not evaluated (or not find the project at all).
    headers = bench_api_key(ROOT, url, env, role="planner")
    if not headers:
        raise RuntimeError("no API key could be made on the bench database")
    results: dict[str, Any] = {}
    with our_service(url, "overlap-service", env) as service:
        service.start("/api/planning/overlap-rules")
        base = f"{service.base}/api/planning/overlap-checks"
        with httpx.Client(timeout=30, headers=headers) as client:
            bodies = {"project": [{"project": fid} for fid, _g, _u in rows],
                      "geometry": [{"geometry": g, "proposed_use": u} for _f, g, u in rows]}
            for name, requests in bodies.items():
                server_ms, client_ms, verdicts = [], [], {}
                for round_no in range(passes + 2):
                    for body in requests:
                        started = time.perf_counter()
                        response = client.post(base, json=body)
                        elapsed = (time.perf_counter() - started) * 1000
                        response.raise_for_status()
                        if round_no >= 2:
                            timing = response.headers["server-timing"]
                            server_ms.append(float(timing.split("dur=")[1]))
                            client_ms.append(elapsed)
                            verdict = response.json()["verdict"]
                            verdicts[verdict] = verdicts.get(verdict, 0) + 1
                results[name] = {"server_ms": _percentiles(server_ms), "client_ms": _percentiles(client_ms),
                                 "verdicts": {k: v // passes for k, v in verdicts.items()}}
                say(f"{name}: server p50 {results[name]['server_ms']['p50']} ms, "
                    f"p90 {results[name]['server_ms']['p90']} ms")
    return {"proposals": len(rows), "passes": passes, **results}


def run_conflicts(url: str, check_ids: list[str]) -> list[dict[str, Any]]:
    registry = load_registry(ROOT / "layers", ROOT / "styles")
    rules = load_rules(default_rules_path(ROOT / "layers"), registry)
    found = []
    for check_id in check_ids:
        summary = run_plan_conflicts(url, rules, check_id, workers=2)
        found.append(summary.as_dict())
        say(f"{check_id}: {summary.a_features:,} x {summary.b_features:,} features, {summary.patches:,} patches, "
            f"{summary.slivers:,} slivers, {summary.seconds:.1f} s {summary.timings}")
    return found


def section(result: dict[str, Any]) -> str:
    lat = result["latency"]
    lines = [BEGIN, "## Planning: overlap checks and plan against plan", "",
             "Written by `bench/overlap.py` (raw results: `bench/results/overlap.json`):", "", "```sh",
             ".venv/bin/python bench/overlap.py             # load the bench-scale layers, measure",
             ".venv/bin/python bench/overlap.py --skip-load # measure again on the loaded databases", "```", "",
             f"Machine: {result['machine']}. Data: the bench-scale city ({result['rows']}).", "",
             f"### One proposal against all {result['rules']} rules (POST /api/planning/overlap-checks)", "",
             f"{lat['proposals']} construction projects x {lat['passes']} passes after 2 warm-up passes, one client "
             "at a time; server time from the response's `Server-Timing` (request read to report built).", "",
             "| proposal sent as | server p50 | p90 | p99 | max | client p50 | verdicts |",
             "| --- | ---: | ---: | ---: | ---: | ---: | --- |"]
    for name in ("project", "geometry"):
        s, c = lat[name]["server_ms"], lat[name]["client_ms"]
        lines.append(f"| {name} | {s['p50']} ms | {s['p90']} ms | {s['p99']} ms | {s['max']} ms | {c['p50']} ms | "
                     f"{', '.join(f'{k} {v}' for k, v in sorted(lat[name]['verdicts'].items()))} |")
    lines += ["", "Target: p50 ≤ 20 ms server-side.", "", "### Plan against plan (2 worker connections)", "",
              "| check | data | features a × b | patches | slivers dropped | seconds | prepare / overlay / classify |",
              "| --- | --- | ---: | ---: | ---: | ---: | --- |"]
    for data, runs in (("bench city", result["conflicts"]), ("synthetic grid", result["synthetic"])):
        for r in runs:
            t = r["timings"]
            lines.append(f"| {r['check']} | {data} | {r['a']['features']:,} × {r['b']['features']:,} | "
                         f"{r['patches']:,} | {r['slivers']['dropped']:,} | {r['seconds']} | "
                         f"{t.get('prepare', 0)} / {t.get('overlay', 0)} / {t.get('classify', 0)} s |")
    lines += ["", "The synthetic pair: two offset grids of 302,500 parcels each over 30 km × 30 km, one rotated 12°, "
              "so every parcel overlaps two to four of the other side (rows written by SQL, not by a refresh).",
              "", END]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", help="a server (any database on it); default: the embedded cluster")
    parser.add_argument("--skip-load", action="store_true")
    parser.add_argument("--passes", type=int, default=3)
    args = parser.parse_args(argv)
    settings = Settings(database_url=None)
    server = server_url(args.url, settings, say)
    bench_url = bench_database(server, BENCH_DB, fresh=not args.skip_load)
    synth_url = bench_database(server, SYNTH_DB, fresh=not args.skip_load)
    if not args.skip_load:
        load_bench(bench_url, settings)
        load_synthetic(synth_url)
    registry = load_registry(ROOT / "layers", ROOT / "styles")
    rules = load_rules(default_rules_path(ROOT / "layers"), registry)
    result = {
        "machine": machine(), "rows": row_counts(bench_url), "rules": len(rules.rules),
        "latency": measure_latency(bench_url, settings, args.passes),
        "conflicts": run_conflicts(bench_url, [c.id for c in rules.plan_conflicts]),
        "synthetic": run_conflicts(synth_url, ["land_use_vs_farmland"]),
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2, ensure_ascii=False), encoding="utf-8")
    write_section(BEGIN, END, section(result))
    say(f"written {RESULTS.relative_to(ROOT)} and the Planning section of {DOC.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
