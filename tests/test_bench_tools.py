"""The benchmark harness's own pieces, without servers: wrk's summary, request URLs, timing, the report."""

import sys
from pathlib import Path

import pytest

from bench import api, peers, procs, refresh, report, wrk

WRK_OUTPUT = """Running 10s test @ http://127.0.0.1:9/x
  2 threads and 8 connections
WRKJSON {"requests":1234,"duration_us":10000000,"bytes":5678,"errors":{"connect":0,"read":0,"write":0,"status":2,"timeout":1},"latency_us":{"mean":6500.5,"stdev":100.0,"p50":6000,"p90":9000,"p99":12000,"max":20000}}
"""  # noqa: E501


def test_wrk_summary_is_read_from_the_json_line() -> None:
    result = wrk.parse_summary("http://127.0.0.1:9/x", WRK_OUTPUT)
    assert result.requests_per_s == pytest.approx(123.4)
    assert result.latency_ms["p50"] == pytest.approx(6.0)
    assert result.failed == 3  # non-2xx/3xx answers and timeouts count against the run


def test_wrk_without_summary_is_an_error() -> None:
    with pytest.raises(ValueError, match="no summary"):
        wrk.parse_summary("http://127.0.0.1:9/x", "Running 10s test\n")


def test_wrk_loads_loopback_only() -> None:
    with pytest.raises(ValueError, match="loopback"):
        wrk.run("http://example.org/", wrk.WrkSettings(1))
    args = wrk.command("http://127.0.0.1:9/x", wrk.WrkSettings(10, 2, 8, 30), {"If-None-Match": 'W/"a"'})
    assert args[:5] == ["wrk", "-t2", "-c8", "-d10s", "--timeout=30s"]
    assert args[args.index("-H"):args.index("-H") + 2] == ["-H", 'If-None-Match: W/"a"']


PROBE = api.Probe(centre=(123.43, 41.8), bbox=(123.4, 41.79, 123.41, 41.8), bbox_rows=120, fid="P1",
                  utility="water", tile=(14, 13809, 6093), rows=1000)


def _endpoint(name: str, collection: str, order: str, suffix: str = "") -> peers.Endpoint:
    server = procs.Server(name, ["true"], 9999, {}, Path("/dev/null"))
    return peers.Endpoint(name, server, collection, order, item_suffix=suffix, tile_suffix="f=mvt" if suffix else "")


def _case(key: str) -> api.Case:
    return next(c for c in api.CASES if c.key == key)


def test_each_server_is_asked_in_its_own_spelling() -> None:
    ours = _endpoint("ours", "pipelines", "zyx")
    tipg = _endpoint("tipg", "pipeline.pipelines", "zxy")
    pygeoapi = _endpoint("pygeoapi", "pipelines", "zyx", "f=json")
    assert api.case_url(ours, _case("tile_304"), PROBE, None).endswith(
        "/collections/pipelines/tiles/WebMercatorQuad/14/6093/13809")
    assert api.case_url(tipg, _case("tile_304"), PROBE, None).endswith(
        "/collections/pipeline.pipelines/tiles/WebMercatorQuad/14/13809/6093")
    assert api.case_url(pygeoapi, _case("item"), PROBE, None).endswith("/items/P1?f=json")
    assert api.case_url(tipg, _case("deep_page"), PROBE, None).endswith("items?limit=100&offset=499900")
    assert api.case_url(ours, _case("deep_page"), PROBE, "http://127.0.0.1:9999/cursor") == \
        "http://127.0.0.1:9999/cursor"
    cql = api.case_url(pygeoapi, _case("cql2"), PROBE, None)
    assert "filter=utility%3D'sewer'" in cql and "filter-lang=cql2-text" in cql and cql.endswith("&f=json")
    assert api.case_url(tipg, _case("asof_instant"), PROBE, None) is None  # peers keep no history


def test_a_spread_of_tiles_is_every_path_in_each_servers_spelling() -> None:
    tiles = {14: [(14, 13809, 6093), (14, 13810, 6093)]}
    probe = api.Probe(**{**PROBE.__dict__, "tiles": tiles})
    tipg = _endpoint("tipg", "pipeline.pipelines", "zxy")
    assert api.case_paths(tipg, _case("tiles_z14"), probe) == [
        "/collections/pipeline.pipelines/tiles/WebMercatorQuad/14/13809/6093",
        "/collections/pipeline.pipelines/tiles/WebMercatorQuad/14/13810/6093"]
    args = wrk.command("http://127.0.0.1:9/x", wrk.WrkSettings(10, 2, 8, 30), None, Path("/tmp/p.txt"))
    assert args[args.index("-s") + 1].endswith("paths.lua") and args[-2:] == ["--", "/tmp/p.txt"]


def test_three_runs_report_the_median_and_the_spread() -> None:
    def result(rate: float) -> wrk.WrkResult:
        return wrk.WrkResult("u", int(rate * 10), 10.0, rate, 1, {"p50": 1000 / rate, "p99": 1.0}, {"status": 0})

    summary = api.summarise([result(90.0), result(110.0), result(100.0)])
    assert summary["requests_per_s"] == 100.0 and summary["runs"] == [90.0, 110.0, 100.0]
    assert summary["spread"] == pytest.approx(0.2) and summary["latency_ms"]["p50"] == 10.0


def test_tile_of_the_city_centre() -> None:
    assert api.tile_of(123.4256, 41.8135, 14) == (14, 13809, 6093)
    assert api.tile_of(0.0, 0.0, 1) == (1, 1, 1)


def test_measure_reports_the_childs_own_peak_memory() -> None:
    big = procs.measure([sys.executable, "-c", "b = bytearray(200 * 2**20); print('done')"])
    small = procs.measure([sys.executable, "-c", "print('done')"])
    assert big.returncode == 0 and big.output_tail == "done"
    assert big.peak_rss_mib > 200 > small.peak_rss_mib


def test_ogr2ogr_gets_the_password_through_the_environment() -> None:
    pg, env = refresh.ogr_connection("postgresql://postgres:s3cret@127.0.0.1:54329/gis_bench")
    assert "s3cret" not in pg and env == {"PGPASSWORD": "s3cret"}
    args = refresh.ogr2ogr_args(pg, Path("x.gpkg"))
    assert args[args.index("-nln") + 1] == "bench_ogr.pipelines"
    assert "EPSG:4490" in args and "PG_USE_COPY" in args


def _measurement(server: str, case: str, rate: float | None, slow_s: float | None = None) -> dict[str, object]:
    check = {"ok": True, "status": 200, "bytes": 10, "features": 10, "note": "", "seconds": slow_s or 0.01}
    result = None if rate is None else {"requests_per_s": rate, "latency_ms": {"p50": 5.0}, "failed": 0}
    return {"server": server, "case": case, "url": "u", "check": check, "result": result,
            "slow": slow_s is not None, "cancelled": 0}


def test_report_states_ratios_and_bounds(tmp_path: Path) -> None:
    data = {
        "workers": 2, "wrk": {"threads": 2, "connections": 8, "duration_s": 10, "timeout_s": 30}, "warmup_s": 2,
        "probe": {"centre": [1, 2], "bbox": [1, 2, 3, 4], "bbox_rows": 120, "fid": "P1", "utility": "water",
                  "tile": [14, 1, 2], "rows": 1000},
        "versions": {"tipg": "1"},
        "measurements": [_measurement("ours", "items_10", 1000.0), _measurement("tipg", "items_10", 20.0),
                         _measurement("pygeoapi", "items_10", None, slow_s=4.0),
                         _measurement("ours-nocache", "tiles_z14", 30.0), _measurement("tipg", "tiles_z14", 20.0)],
        "database": {"items_10": {"tps": 1250.0}},
    }
    out = tmp_path / "benchmarks.md"
    report.write(out, {"CPU": "x"}, None, data, [])
    text = out.read_text()
    assert "| items `limit=10` | 1,000.0 (5.0 ms) | 20.0 (5.0 ms) |" in text
    # pygeoapi's one request took 4 s: at most 2 workers / 4 s; the database alone ran 1,250 statements/s
    assert "| 50.0× | ≥ 20× ✓ | 1,250.0 | 80% | ≥ 2,000.0× |" in text
    assert "| … cold (our cache off) | 30.0 (5.0 ms) | 20.0 (5.0 ms) | not run | 1.5× | ≥ 3× ✗ |" in text
    assert "Targets met in this run: items `limit=10` ✓, items `limit=10`: ≥ 50% of the database alone ✓" in text


def test_report_keeps_other_sections_of_the_file(tmp_path: Path) -> None:
    out = tmp_path / "benchmarks.md"
    out.write_text("# Benchmarks\n\n<!-- planning:begin -->\n## Planning\nkept\n<!-- planning:end -->\n")
    report.write(out, {"CPU": "x"}, None, None, [])
    report.write(out, {"CPU": "y"}, None, None, [])  # the second run replaces the first, once
    text = out.read_text()
    assert text.startswith("# Benchmarks\n\n<!-- bench:begin -->")
    assert text.count("<!-- bench:begin -->") == 1 and "Machine: CPU: y" in text and "Machine: CPU: x" not in text
    assert "## Planning\nkept\n<!-- planning:end -->" in text


def test_report_says_when_the_machine_was_busy(tmp_path: Path) -> None:
    busy = _measurement("ours", "items_10", 1000.0) | {"load_before": 9.5}
    data = {"workers": 2, "wrk": {"threads": 2, "connections": 8, "duration_s": 10, "timeout_s": 30},
            "warmup_s": 2, "probe": {"centre": [1, 2], "bbox": [1, 2, 3, 4], "bbox_rows": 120, "fid": "P1",
                                     "utility": "sewer", "tile": [14, 1, 2], "rows": 1000},
            "versions": {}, "measurements": [busy]}
    out = tmp_path / "benchmarks.md"
    report.write(out, {"CPU": "x"}, None, data, [])
    assert "**This run was taken on a busy machine** (load average up to 9.5" in out.read_text()


def test_a_run_in_which_no_request_finished_is_a_bound() -> None:
    stalled = _measurement("pygeoapi", "item", 0.0, None) | {"check": {"ok": True, "status": 200, "bytes": 1,
                                                                      "features": 1, "note": "", "seconds": 4.0}}
    stalled["result"] = {"requests": 0, "requests_per_s": 0.0, "latency_ms": {"p50": 0.0}, "failed": 0}
    assert report._rate(stalled) == 0.5 and report._bounded(stalled)
    assert report._cell(stalled).startswith("≤ 0.50 (no request finished within a run")
