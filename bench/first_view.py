"""The web map's first view of the bench city, in a real browser, with the service's tile cache off.

    GIS_CLUSTER_DIR=... GIS_CLUSTER_PORT=... .venv/bin/python -m bench.first_view [--runs 3] [--size 1920x1080]

Starts our service (2 workers, GIS_TILE_CACHE_MIB=0) on the loaded bench database, opens /map in Debian's headless
Chromium (Playwright, as tests/test_web_map_browser.py does) in a fresh browser context each run (no HTTP cache),
and times from navigation to the map being idle with every tile drawn. Prints each run, the median, and the
tile requests of the last run (count, bytes, the slowest). Nothing is written to docs/: the figures go in the
report of the change they measure.
"""

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from playwright.sync_api import Request, sync_playwright  # noqa: E402

from bench import peers  # noqa: E402
from bench.procs import free_port  # noqa: E402
from bench.run import RESULTS, bench_url, prepare_for_reads, say  # noqa: E402
from gis.settings import Settings  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
GL_ARGS = ["--use-gl=angle", "--use-angle=swiftshader", "--enable-unsafe-swiftshader"]
IDLE = "() => window.gisMap && window.gisMap.loaded() && window.gisMap.areTilesLoaded() && !window.gisMap.isMoving()"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--size", default="1920x1080", help="the browser's viewport, WIDTHxHEIGHT pixels")
    args = parser.parse_args(argv)
    width, height = (int(v) for v in args.size.split("x"))
    url = bench_url(Settings(), recreate=False)
    prepare_for_reads(url)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GIS_", "PYGEOAPI_", "TIPG_"))}
    key = peers.bench_api_key(ROOT, url, env)["X-API-Key"]
    server = peers.our_server(ROOT, RESULTS / "servers", url, free_port(), env, tile_cache=False)
    times: list[float] = []
    with server, sync_playwright() as playwright:
        server.start("/collections")
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=GL_ARGS)
        tiles: list[tuple[float, int, str]] = []  # (milliseconds, bytes, URL) of the tiles of the last run

        def seen(request: Request) -> None:
            if "/tiles/" in request.url:
                tiles.append((request.timing["responseEnd"], request.sizes()["responseBodySize"], request.url))

        for run in range(args.runs):
            context = browser.new_context(viewport={"width": width, "height": height})
            page = context.new_page()
            tiles.clear()
            page.on("requestfinished", seen)
            started = time.monotonic()
            page.goto(f"{server.base}/map?api_key={key}")
            page.wait_for_function(IDLE, timeout=120_000, polling=50)
            took = time.monotonic() - started
            times.append(took)
            zoom = page.evaluate("() => window.gisMap.getZoom()")
            say(f"run {run + 1}: first view drawn in {took:.2f} s (zoom {zoom:.2f}, {len(tiles)} tile responses)")
            context.close()
        browser.close()
    say(f"median {statistics.median(times):.2f} s over {args.runs} runs ({', '.join(f'{t:.2f}' for t in times)}); "
        f"last run: {len(tiles)} tiles, {sum(size for _, size, _ in tiles) / 1024:.0f} KiB")
    for took, size, address in sorted(tiles, reverse=True)[:8]:
        say(f"  {took:7.0f} ms {size / 1024:6.0f} KiB  {address.split('/collections/')[-1].split('?')[0]}")
    by_layer: dict[str, list[int]] = {}
    for _took, size, address in tiles:
        by_layer.setdefault(address.split("/collections/")[-1].split("/")[0], []).append(size)
    say("  by layer: " + ", ".join(f"{layer} {len(sizes)} tiles {sum(sizes) / 1024:.0f} KiB"
                                    for layer, sizes in sorted(by_layer.items())))
    return 0


if __name__ == "__main__":
    sys.exit(main())
