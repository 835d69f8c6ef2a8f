"""Burst analysis (爆管关阀) latency at bench scale: in the library and through the OGC API Processes route.

    .venv/bin/python bench/burst.py                 # the embedded cluster, database gis_burst_bench
    .venv/bin/python bench/burst.py --url URL       # another server (the database is made on it)
    .venv/bin/python bench/burst.py --skip-load     # reuse the loaded database
    .venv/bin/python bench/run.py --only burst      # the same, from `make bench`'s driver

1. gis_burst_bench: the bench-scale pipelines, pipe_nodes and buildings (data-samples/generated/bench,
   about 1,000,000 segments) loaded by the real refresh.
2. A fixed sample (md5 order, so every run takes the same) of in-service water, gas and heat pipes, and as
   many points 5 m off other such pipes.
3. Server side: gis.analysis.pipeline.burst on one connection, as the process runs it. Through HTTP: the
   service is started on the database and each burst is POSTed to /processes/pipe-burst/execution with an
   API key of role pipeline_app (client time: request sent to body read). Two warm-up passes, then timed ones.
Results: bench/results/burst.json and the "Pipeline: burst analysis" section of docs/benchmarks.md.
"""

import argparse
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
import psycopg  # noqa: E402
from psycopg import sql  # noqa: E402

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
from bench.procs import load_average  # noqa: E402
from gis.analysis import pipeline  # noqa: E402
from gis.analysis.pipeline_rules import PipelineRules, default_pipeline_rules_path, load_pipeline_rules  # noqa: E402
from gis.layers import load_registry  # noqa: E402
from gis.settings import Settings  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "burst.json"
BEGIN, END = "<!-- burst:begin -->", "<!-- burst:end -->"
BENCH_DB = "gis_burst_bench"
TARGET_MS = 200.0
SAMPLES_DEFAULT = 200
PASSES_DEFAULT = 3


def say(message: str) -> None:
    print(f"[burst {time.strftime('%H:%M:%S')}] {message}", flush=True)


def _rules() -> PipelineRules:
    registry = load_registry(ROOT / "layers", ROOT / "styles")
    return load_pipeline_rules(default_pipeline_rules_path(ROOT / "layers"), registry)


def load_bench(url: str, settings: Settings) -> None:
    registry = load_registry(ROOT / "layers", ROOT / "styles")
    rules = load_pipeline_rules(default_pipeline_rules_path(ROOT / "layers"), registry)
    load_layers(url, registry, (rules.pipelines, rules.nodes, rules.buildings), settings, say)


def sample(url: str, rules: PipelineRules, n: int) -> tuple[list[str], list[list[float]]]:
    """n pipe fids and n points 5 m beside other pipes, in service, of the utilities with valves."""
    query = sql.SQL(
        "SELECT fid, ST_X(c), ST_Y(c) FROM (SELECT fid, ST_Transform(ST_Translate(ST_Transform("
        "ST_LineInterpolatePoint(geom, 0.5), 4550), 0, 5), 4490) AS c FROM {} WHERE utility = ANY(%s) "
        "AND status = ANY(%s) ORDER BY md5(fid) LIMIT %s) s").format(sql.Identifier("pipeline", rules.pipelines.id))
    with psycopg.connect(url) as conn:
        rows = conn.execute(query, (list(rules.network.utilities), list(rules.network.traversed_status),
                                    2 * n)).fetchall()
    return [r[0] for r in rows[:n]], [[round(r[1], 7), round(r[2], 7)] for r in rows[n:]]


def percentiles(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {"n": len(ordered), "p50": round(statistics.median(ordered), 1),
            "p95": round(ordered[int(0.95 * (len(ordered) - 1))], 1), "max": round(ordered[-1], 1)}


def _timed(calls: list[Callable[[], Any]], passes: int) -> tuple[list[float], list[Any], float]:
    """Milliseconds and answers of the timed passes, and the 1-minute load average as they started."""
    elapsed, answers = [], []
    load = load_average()
    for round_no in range(passes + 2):
        for call in calls:
            started = time.perf_counter()
            answer = call()
            if round_no >= 2:
                elapsed.append((time.perf_counter() - started) * 1000)
                answers.append(answer)
    return elapsed, answers, load


def measure_library(url: str, rules: PipelineRules, pipes: list[str], points: list[list[float]],
                    passes: int) -> dict[str, Any]:
    found: dict[str, Any] = {}
    with psycopg.connect(url, autocommit=True) as conn:
        for name, calls in (("pipe", [lambda f=f: pipeline.burst(conn, rules, pipe=f) for f in pipes]),
                            ("point", [lambda p=p: pipeline.burst(conn, rules, point=p) for p in points])):
            ms, results, load = _timed(calls, passes)
            found[name] = {"ms": percentiles(ms), "load_before": load, **_sizes([r.summary for r in results])}
            say(f"library, {name}: p50 {found[name]['ms']['p50']} ms, p95 {found[name]['ms']['p95']} ms")
    return found


def _sizes(summaries: list[dict[str, Any]]) -> dict[str, Any]:
    return {"isolated_pipes_p50": statistics.median(s["isolated_pipes"] for s in summaries),
            "isolated_pipes_max": max(s["isolated_pipes"] for s in summaries),
            "valves_to_close_p50": statistics.median(s["valves_to_close"] for s in summaries),
            "customers_p50": statistics.median(s["customers"] for s in summaries)}


def measure_http(url: str, pipes: list[str], points: list[list[float]], passes: int) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIS_")}
    headers = bench_api_key(ROOT, url, env)
    if not headers:
        raise RuntimeError("no API key could be made on the bench database")
    found: dict[str, Any] = {}
    with our_service(url, "burst-service", env) as service:
        service.start("/processes")
        with httpx.Client(base_url=service.base, headers=headers, timeout=60) as client:
            def post(inputs: dict[str, Any]) -> dict[str, Any]:
                response = client.post("/processes/pipe-burst/execution", json={"inputs": inputs})
                response.raise_for_status()
                body: dict[str, Any] = response.json()
                return body
            for name, calls in (("pipe", [lambda f=f: post({"pipe": f}) for f in pipes]),
                                ("point", [lambda p=p: post({"point": p}) for p in points])):
                ms, answers, load = _timed(calls, passes)
                found[name] = {"ms": percentiles(ms), "load_before": load, **_sizes([a["summary"] for a in answers])}
                say(f"HTTP, {name}: p50 {found[name]['ms']['p50']} ms, p95 {found[name]['ms']['p95']} ms")
    return found


def section(result: dict[str, Any]) -> str:
    lines = [BEGIN, "## Pipeline: burst analysis (爆管关阀)", "",
             "Written by `bench/burst.py` (raw results: `bench/results/burst.json`):", "", "```sh",
             ".venv/bin/python bench/burst.py             # load the bench-scale network, measure",
             ".venv/bin/python bench/burst.py --skip-load # measure again on the loaded database",
             ".venv/bin/python bench/run.py --only burst  # the same through make bench's driver", "```", "",
             f"Machine: {result['machine']}. Data: {result['rows']}. 1-minute load average as each series "
             f"started: {result['load'][0]:.1f} to {result['load'][1]:.1f} (2 cores: above 1 or so, something else "
             "was running and the times are inflated).", "",
             f"{result['samples']} in-service water/gas/heat pipes given by fid, and {result['samples']} points "
             "5 m beside other such pipes (snapped to the nearest pipe), chosen in md5(fid) order; "
             f"{result['passes']} timed passes after 2 warm-up passes, one request at a time. *Library*: "
             "`gis.analysis.pipeline.burst` on one connection (what the process runs); *HTTP*: "
             "`POST /processes/pipe-burst/execution` with an API key (role `pipeline_app`), request sent to "
             "answer read, JSON output.", "",
             "| burst given as | library p50 | p95 | max | HTTP p50 | p95 | max | isolated pipes p50 / max | "
             "valves to close p50 | target |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |"]
    for name in ("pipe", "point"):
        lib, web = result["library"][name], result["http"][name]
        ok = "✓" if web["ms"]["p95"] < TARGET_MS else "✗"
        lines.append(f"| {name} | {lib['ms']['p50']} ms | {lib['ms']['p95']} ms | {lib['ms']['max']} ms | "
                     f"{web['ms']['p50']} ms | {web['ms']['p95']} ms | {web['ms']['max']} ms | "
                     f"{lib['isolated_pipes_p50']:g} / {lib['isolated_pipes_max']} | "
                     f"{lib['valves_to_close_p50']:g} | HTTP p95 < {TARGET_MS:g} ms {ok} |")
    lines += ["", *result.get("notes", []), "", END]
    return "\n".join(lines)


NOTES = [
    "- The walk follows the pipelines' own from_node/to_node columns with a recursive CTE (btree indexes on both), "
    "stopping at valves; the isolated pipes' buildings are found with the GiST index on buildings. Nothing is "
    "cached between requests: each answer reads the network as it is now. No change to the analysis was needed "
    "for the target.",
    "- The HTTP column adds what every synchronous process execution costs: the key check (cached), pygeoapi's "
    "request handling, the job's three writes to ops.jobs (created, running, result), each its own commit, and "
    "the audit rows of the internal layers read (pipelines, pipe_nodes). The service's rate limit is off "
    "(GIS_HTTP_RATE_PER_SECOND=0): one client sending request after request is what it would slow down. "
    "On a loaded machine those commits, not the walk, make most of the difference between the two columns.",
]


def run(url: str | None, skip_load: bool, samples: int, passes: int) -> dict[str, Any]:
    settings = Settings(database_url=None)
    bench_url = bench_database(server_url(url, settings, say), BENCH_DB, fresh=not skip_load)
    if not skip_load:
        load_bench(bench_url, settings)
    rules = _rules()
    pipes, points = sample(bench_url, rules, samples)
    result: dict[str, Any] = {
        "machine": machine(), "rows": row_counts(bench_url), "samples": samples, "passes": passes,
        "library": measure_library(bench_url, rules, pipes, points, passes),
        "http": measure_http(bench_url, pipes, points, passes), "notes": NOTES}
    loads = [m["load_before"] for part in ("library", "http") for m in result[part].values()]
    result["load"] = [min(loads), max(loads)]
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2, ensure_ascii=False), encoding="utf-8")
    write_section(BEGIN, END, section(result))
    say(f"written {RESULTS.relative_to(ROOT)} and the burst section of {DOC.relative_to(ROOT)}")
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", help="a server (any database on it); default: the embedded cluster")
    parser.add_argument("--skip-load", action="store_true")
    parser.add_argument("--samples", type=int, default=SAMPLES_DEFAULT, help="pipes (and as many points) per pass")
    parser.add_argument("--passes", type=int, default=PASSES_DEFAULT)
    args = parser.parse_args(argv)
    run(args.url, args.skip_load, args.samples, args.passes)
    return 0


if __name__ == "__main__":
    sys.exit(main())
