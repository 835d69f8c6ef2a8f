"""The web map's first view of the bench city, in a real browser, with the service's tile cache off.

    GIS_CLUSTER_DIR=... GIS_CLUSTER_PORT=... .venv/bin/python -m bench.first_view [--runs 3] [--size 1920x1080]

Starts our service (2 workers, GIS_TILE_CACHE_MIB=0) on the loaded bench database, opens /map in Debian's headless
Chromium (Playwright, as tests/test_web_map_browser.py does) in a fresh browser context each run (no HTTP cache),
and times from navigation to the map being idle with every tile drawn. Prints each run, the median, and the
tile requests of the last run (count, bytes, the slowest). `make bench` (bench/run.py) runs it after the OGC API
cases and judges the median against issue 16's target (under 2 s); run alone it writes nothing.
"""

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from playwright.sync_api import Request, sync_playwright  # noqa: E402

from bench import peers  # noqa: E402
from bench.procs import free_port, load_average  # noqa: E402
from gis.settings import Settings  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
GL_ARGS = ["--use-gl=angle", "--use-angle=swiftshader", "--enable-unsafe-swiftshader"]
RESULTS = ROOT / "bench" / "results"
RUNS, VIEWPORT = 3, "1920x1080"
IDLE = "() => window.gisMap && window.gisMap.loaded() && window.gisMap.areTilesLoaded() && !window.gisMap.isMoving()"


@dataclass
class FirstView:
    """Each run's time from navigation to the map idle with every tile drawn, and the last run's tiles."""

    seconds: list[float]
    zoom: float
    viewport: str
    tiles: int
    tile_kib: float
    slowest: list[tuple[float, int, str]]  # (milliseconds, bytes, URL), the slowest tiles of the last run
    by_layer: dict[str, tuple[int, float]]  # layer -> (tiles, KiB)
    load_before: float | None = None

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self) | {"median": round(self.median, 2)}


def tiles_of(address: str) -> str:
    """What a tile request asks for: one collection's tiles (its id), or the dataset's (how many collections)."""
    parsed = urlsplit(address)
    if "/collections/" in parsed.path:
        return parsed.path.split("/collections/")[1].split("/")[0]
    asked = parse_qs(parsed.query).get("collections", [""])[0]
    return f"dataset tiles ({len(asked.split(',')) if asked else 'all'} collections)"


def measure(url: str, runs: int = RUNS, size: str = VIEWPORT, say: Callable[[str], None] = print) -> FirstView:
    """Our service (2 workers, tile cache off) on the loaded bench database, its /map opened `runs` times."""
    width, height = (int(v) for v in size.split("x"))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GIS_", "PYGEOAPI_", "TIPG_"))}
    key = peers.bench_api_key(ROOT, url, env)["X-API-Key"]
    server = peers.our_server(ROOT, RESULTS / "servers", url, free_port(), env, tile_cache=False)
    times: list[float] = []
    tiles: list[tuple[float, int, str]] = []  # (milliseconds, bytes, URL) of the tiles of the last run
    zoom, load = 0.0, load_average()
    with server, sync_playwright() as playwright:
        server.start("/collections")
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=GL_ARGS)

        def seen(request: Request) -> None:
            if "/tiles/" in request.url:
                tiles.append((request.timing["responseEnd"], request.sizes()["responseBodySize"], request.url))

        for run in range(runs):
            context = browser.new_context(viewport={"width": width, "height": height})
            page = context.new_page()
            tiles.clear()
            page.on("requestfinished", seen)
            started = time.monotonic()
            page.goto(f"{server.base}/map?api_key={key}")
            page.wait_for_function(IDLE, timeout=120_000, polling=50)
            took = time.monotonic() - started
            times.append(round(took, 3))
            zoom = float(page.evaluate("() => window.gisMap.getZoom()"))
            say(f"run {run + 1}: first view drawn in {took:.2f} s (zoom {zoom:.2f}, {len(tiles)} tile responses)")
            context.close()
        browser.close()
    by_layer: dict[str, list[int]] = {}
    for _took, size_b, address in tiles:
        by_layer.setdefault(tiles_of(address), []).append(size_b)
    slowest = [(round(t, 1), b, urlsplit(a).path.removeprefix("/")) for t, b, a in sorted(tiles, reverse=True)[:8]]
    return FirstView(times, round(zoom, 2), size, len(tiles), round(sum(b for _, b, _ in tiles) / 1024, 1), slowest,
                     {layer: (len(sizes), round(sum(sizes) / 1024, 1)) for layer, sizes in sorted(by_layer.items())},
                     load)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=RUNS)
    parser.add_argument("--size", default=VIEWPORT, help="the browser's viewport, WIDTHxHEIGHT pixels")
    args = parser.parse_args(argv)
    from bench.run import bench_url, prepare_for_reads, say  # bench.run imports this module: not at the top

    url = bench_url(Settings(), recreate=False)
    prepare_for_reads(url)
    view = measure(url, args.runs, args.size, say)
    say(f"median {view.median:.2f} s over {args.runs} runs ({', '.join(f'{t:.2f}' for t in view.seconds)}); "
        f"last run: {view.tiles} tiles, {view.tile_kib:.0f} KiB")
    for took, size, address in view.slowest:
        say(f"  {took:7.0f} ms {size / 1024:6.0f} KiB  {address}")
    say("  by layer: " + ", ".join(f"{layer} {n} tiles {kib:.0f} KiB" for layer, (n, kib) in view.by_layer.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
