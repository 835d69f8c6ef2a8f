"""The web map in a real browser: Debian's Chromium (headless, WebGL through SwiftShader) driven by Playwright
against the real service. The map draws the city with its styles, moves through time, shows attributes on
click and runs the overlap check of a drawn proposal, without a console error."""

import io
import json
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import numpy as np
import psycopg
import pytest
from conftest import TEST_KEYS
from PIL import Image
from playwright.sync_api import Browser, Page, Request, sync_playwright

CHROMIUM = "/usr/bin/chromium"
# No GPU here: WebGL through ANGLE on SwiftShader (software), which Chromium only enables when asked to.
GL_ARGS = ["--use-gl=angle", "--use-angle=swiftshader", "--enable-unsafe-swiftshader"]
VIEWPORT = {"width": 900, "height": 600}
IDLE = "() => window.gisMap && window.gisMap.loaded() && window.gisMap.areTilesLoaded() && !window.gisMap.isMoving()"
ADMIN = TEST_KEYS["admin"]
BACKGROUND = (0xF4, 0xF3, 0xEF)  # services/routers/web_map.py BACKGROUND


@dataclass
class MapPage:
    page: Page
    errors: list[str] = field(default_factory=list)
    tiles: list[Request] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)

    def idle(self) -> None:
        self.page.wait_for_function(IDLE, timeout=30_000)

    def assert_clean(self) -> None:
        assert not self.errors, f"console errors: {self.errors}"
        assert not self.failed, f"failed requests: {self.failed}"

    def picture(self) -> Image.Image:
        """The map area (its middle: the zoom buttons and scale bar left out), as RGB."""
        shot = Image.open(io.BytesIO(self.page.locator("#map").screenshot())).convert("RGB")
        w, h = shot.size
        return shot.crop((int(w * 0.1), int(h * 0.1), int(w * 0.85), int(h * 0.9)))

    def set_date(self, day: str, switch_on: bool = False) -> None:
        """Moves the slider to a day as a user's drag ends (an input event each step, then change), or, with
        switch_on, puts it there first and then ticks "as of a date"."""
        with self.page.expect_request(lambda r: f"datetime={day}" in r.url):
            self.page.evaluate("""([day, switchOn]) => { const s = document.getElementById('time');
                s.value = String(Math.floor(Date.parse(day) / 86400000));
                if (switchOn) { document.getElementById('time-on').click(); return; }
                s.dispatchEvent(new Event('input')); s.dispatchEvent(new Event('change')); }""", [day, switch_on])
        # the old tiles stay drawn until the new ones are in: idle twice, a moment apart
        self.idle()
        self.page.wait_for_timeout(500)
        self.idle()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=GL_ARGS)
        yield launched
        launched.close()


@pytest.fixture
def open_map(browser: Browser, api_url: str) -> Iterator[Callable[..., MapPage]]:
    pages: list[MapPage] = []

    def open_(key: str | None = ADMIN, where: str = "") -> MapPage:
        page = browser.new_page(viewport=VIEWPORT)
        opened = MapPage(page)
        page.on("console", lambda m: opened.errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: opened.errors.append(str(e)))
        page.on("request", lambda r: opened.tiles.append(r) if "/tiles/" in r.url else None)
        page.on("response", lambda r: opened.failed.append(f"{r.status} {r.url}") if r.status >= 400 else None)
        page.goto(f"{api_url}/map" + (f"?api_key={key}" if key else "") + where)
        opened.idle()
        pages.append(opened)
        return opened

    yield open_
    for opened in pages:
        opened.page.close()


def tiled_collections(url: str) -> list[str]:
    """The collections a vector tile request asks for: one collection's tile, or the dataset's (`collections`)."""
    parsed = urlsplit(url)
    if "/collections/" in parsed.path:
        return [parsed.path.split("/collections/")[1].split("/")[0]]
    return parse_qs(parsed.query)["collections"][0].split(",")


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image, dtype=np.int16).reshape(-1, 3)


def colours(image: Image.Image, at_least: int = 100) -> set[tuple[int, ...]]:
    """The colours covering at least `at_least` pixels (antialiased edges and specks left out)."""
    found, counts = np.unique(pixels(image), axis=0, return_counts=True)
    return {tuple(int(v) for v in c) for c, n in zip(found, counts, strict=True) if n >= at_least}


def near(image: Image.Image, colour: tuple[int, int, int], tolerance: int = 6) -> int:
    return int((np.abs(pixels(image) - np.array(colour)).max(axis=1) <= tolerance).sum())


def test_the_map_draws_the_city_with_its_styles(open_map: Callable[..., MapPage], api_url: str) -> None:
    opened = open_map()
    drawn = opened.picture()
    # every vector layer shown at start asked for tiles, with the key as a header and never in the URL
    style = httpx.get(f"{api_url}/map/style.json", headers={"X-API-Key": ADMIN}, timeout=30).json()
    shown = {info["id"] for info in style["metadata"]["gis:layers"] if info["visible"]}
    asked = {layer_id for r in opened.tiles for layer_id in tiled_collections(r.url)}
    assert shown <= asked
    # the layers shown at start come in one tile per place, not one per place and layer
    assert all("/collections/" not in r.url for r in opened.tiles)
    assert all(r.headers.get("x-api-key") == ADMIN and "api_key" not in r.url for r in opened.tiles)
    # the styles' own colours are there: the opaque fills of the layers shown (land use classes, buildings...),
    # as seen through the two translucent fills that cover the whole city centre, composited in the style's order
    fills = {tuple(int(v) for v in m) for layer in style["layers"] if layer["type"] == "fill"
             and layer.get("layout", {}).get("visibility") != "none"
             for m in re.findall(r"rgba\((\d+),(\d+),(\d+),1\)", json.dumps(layer["paint"]))}
    overlays = [[float(v) for v in re.findall(r"[\d.]+", layer["paint"]["fill-color"])] for layer in style["layers"]
                if layer["id"] in ("admin_districts:0", "police_jurisdictions:0")]
    assert len(overlays) == 2

    def seen_as(colour: tuple[int, ...]) -> tuple[int, ...]:
        out = [float(c) for c in colour]
        for *over, alpha in overlays:
            out = [c * (1 - alpha) + o * alpha for c, o in zip(out, over, strict=True)]
        return tuple(round(c) for c in out)

    seen = {fill for fill in fills if near(drawn, seen_as(fill)) >= 50}
    assert len(seen) >= 8, f"style colours drawn: {sorted(seen)} of {sorted(fills)}"
    for box in opened.page.locator("#layers h3 input[type=checkbox]").all():
        box.uncheck()
    opened.idle()
    blank = opened.picture()
    assert colours(blank) == {BACKGROUND}
    assert len(colours(drawn)) >= 15  # a city of many styled layers, against the bare background
    opened.assert_clean()


def test_the_time_slider_moves_the_tiles_and_the_picture_through_time(
        open_map: Callable[..., MapPage], db: psycopg.Connection) -> None:
    before, after = "2027-06-01", "2028-08-01"
    changed = db.execute(
        "SELECT count(*) FROM planning.land_use_plan WHERE (valid_from > %s AND valid_from <= %s) "
        "OR (valid_to > %s AND valid_to <= %s)", (before, after, before, after)).fetchone()
    assert changed is not None and changed[0] > 10  # the plan in force changes between the two dates
    opened = open_map()
    opened.set_date(before, switch_on=True)
    first, asked = opened.picture(), len(opened.tiles)
    opened.set_date(after)
    second = opened.picture()
    later = opened.tiles[asked:]
    assert later and all(f"datetime={after}" in r.url for r in later)
    assert opened.page.inner_text("#time-label") == after
    difference = int((np.abs(pixels(first) - pixels(second)).max(axis=1) > 30).sum())
    assert difference > 1000
    opened.assert_clean()


def test_a_click_shows_the_attributes_of_the_feature_there(open_map: Callable[..., MapPage],
                                                           db: psycopg.Connection) -> None:
    row = db.execute("SELECT fid, name, ST_X(p), ST_Y(p) FROM base.water_bodies, ST_PointOnSurface(geom) p "
                     "WHERE fid = 'SX0003'").fetchone()
    assert row is not None
    fid, name, lon, lat = row
    opened = open_map(where=f"#16/{lat}/{lon}")
    box = opened.page.locator("#map").bounding_box()
    assert box is not None
    opened.page.mouse.click(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    shown = opened.page.locator(f"#attributes .feature[data-layer=water_bodies][data-fid='{fid}']")
    shown.wait_for(timeout=10_000)
    cells = dict(zip(shown.locator("th").all_inner_texts(), shown.locator("td").all_inner_texts(), strict=True))
    assert cells["name"] == name and cells["fid"] == fid
    opened.assert_clean()


def test_a_drawn_proposal_is_checked_and_its_overlaps_drawn(
        open_map: Callable[..., MapPage], api_url: str, db: psycopg.Connection) -> None:
    row = db.execute("SELECT ST_X(p), ST_Y(p) FROM planning.ecological_redline, ST_PointOnSurface(geom) p "
                     "WHERE fid = 'HX-003'").fetchone()
    assert row is not None
    lon, lat = row
    opened = open_map(where=f"#14/{lat}/{lon}")
    page = opened.page
    box = page.locator("#map").bounding_box()
    assert box is not None
    x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    page.click("#draw")
    for dx, dy in ((-60, -60), (60, -60), (60, 60), (-60, 60)):
        page.mouse.click(x + dx, y + dy)
    page.click("#finish")
    with page.expect_request(lambda r: r.url.endswith("/api/planning/overlap-checks")) as sent:
        page.click("#check")
    page.locator("#verdict").wait_for(timeout=30_000)
    opened.idle()
    body: dict[str, Any] = sent.value.post_data_json
    ring = body["geometry"]["coordinates"][0]
    assert body["geometry"]["type"] == "Polygon" and len(ring) == 5 and ring[0] == ring[-1]
    # the page shows what the API answers for the same polygon
    report = httpx.post(f"{api_url}/api/planning/overlap-checks", json=body, headers={"X-API-Key": ADMIN},
                        timeout=60).json()
    statuses = {r.get_attribute("data-rule"): r.get_attribute("data-status")
                for r in page.locator("#result tr[data-rule]").all()}
    assert statuses == {r["id"]: r["status"] for r in report["rules"]}
    assert page.locator("#verdict").get_attribute("data-verdict") == report["verdict"]
    # the red line is really there (PostGIS on the same ring), and its overlap is drawn on the map
    # (CRS84 and CGCS2000 lon/lat differ by centimetres, nothing at this size)
    hit = db.execute("SELECT ST_Intersects(geom, ST_SetSRID(ST_GeomFromGeoJSON(%s), 4490)) "
                     "FROM planning.ecological_redline WHERE fid = 'HX-003'",
                     (json.dumps(body["geometry"]),)).fetchone()
    assert hit == (True,) and statuses["ecological_redline"] == "conflict"
    deadline = time.monotonic() + 10
    while not page.evaluate("window.gisMap.queryRenderedFeatures({layers: ['overlap-fill']}).length"):
        assert time.monotonic() < deadline, "the overlap geometries were not drawn"
        time.sleep(0.2)
    opened.assert_clean()


def test_a_raster_layer_is_drawn_from_its_map_tiles_when_ticked(open_map: Callable[..., MapPage]) -> None:
    opened = open_map(where="#11/41.76/123.42")
    page = opened.page
    for box in page.locator("#layers h3 input[type=checkbox]").all():
        box.uncheck()
    opened.idle()
    assert colours(opened.picture()) == {BACKGROUND}
    with page.expect_response(lambda r: "/collections/dem/map/tiles/WebMercatorQuad/" in r.url) as first:
        page.check("#layers input[data-layer=dem]")
    assert first.value.status == 200 and first.value.headers["content-type"] == "image/png"
    assert first.value.request.headers.get("x-api-key") == ADMIN
    opened.idle()
    drawn = opened.picture()
    covered = int((np.abs(pixels(drawn) - np.array(BACKGROUND)).max(axis=1) > 10).sum())
    assert covered > 0.5 * drawn.width * drawn.height  # the relief covers the city
    opened.assert_clean()
