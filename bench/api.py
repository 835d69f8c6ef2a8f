"""(b) The OGC API benchmark: the same requests to each server, each checked once, then loaded with wrk.

The request parameters come from the data (the city centre is where the pipelines are): a bbox holding
about 100 segments, one segment's id, the commonest utility for the CQL2 filter, the z14 tile over the
centre. Before a server is loaded on a request, one plain GET must answer 200 with what was asked for;
a request a server cannot answer is reported as such, never timed.
"""

import json
import math
import time
import urllib.error
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, replace
from typing import Any

import psycopg
from psycopg import sql

from bench import wrk
from bench.peers import WORKERS, Endpoint
from bench.procs import load_average
from gis.features.params import MAX_LIMIT

LAYER = "pipelines"
PAGE = 100
DEEP_PAGE = 5000  # the page reached: rows (DEEP_PAGE - 1) * PAGE + 1 ...
BBOX_ROWS = 120  # segments the bbox request's box should hold, a little more than one page
WARMUP_BELOW_S = 1.0  # requests faster than this get a warm-up run before the timed one
CHECK_TIMEOUT_S = 10.0  # the single checking request gives up after this, or after three runs' duration
QUIET_WAIT_S = 15.0  # how long queries left running by a finished load may go on before they are cancelled


@dataclass(frozen=True)
class Case:
    key: str
    title: str
    target_vs_tipg: float | None  # our throughput over tipg's that the issue asks for
    connections: int | None = None  # wrk's (and pgbench's) connections, if not the run's default
    zoom: int | None = None  # a spread of tiles at this zoom: every tile a map view of the city centre needs
    database: bool = True  # compared with the database's own limit for the same statement (pgbench)


CASES = (
    Case("items_10", "items `limit=10`", 20),
    Case("items_100", "items `limit=100`", 20),
    Case("items_100_c1", "items `limit=100`, 1 connection", 20, connections=1),
    Case("items_100_c64", "items `limit=100`, 64 connections", 20, connections=64),
    Case("items_1000", "items `limit=1000`", 20),  # a plain page: the issue asks 20x on every one
    Case("bbox_100", "bbox page (about 100 features)", 5),
    Case("bbox_small", "small bbox (about 10 features)", 5),
    Case("item", "one item by id", 2),
    Case("cql2", "filter `utility='sewer'`, `limit=100`", 20),
    Case("cql2_two", "filter `diameter_mm>500 AND material='HDPE'`, `limit=100`", 20),
    Case("asof_instant", "`datetime` instant (mid-history), `limit=100`", None),
    Case("asof_interval", "`datetime` interval (two deliveries), `limit=100`", None),
    Case("asof_item", "one item by id, `datetime` instant", None),
    Case("download", "download of the bbox page's segments (CSV)", None, database=False),
    Case("asof_download", "download of the bbox page's segments (CSV), `datetime` instant", None, database=False),
    Case("tiles_z10", "z10 tiles, a map view's spread", 3, zoom=10),
    Case("tiles_z12", "z12 tiles, a map view's spread", 3, zoom=12),
    Case("tiles_z14", "z14 tiles, a map view's spread", 3, zoom=14),
    Case("asof_tiles_z12", "z12 tiles, a map view's spread, `datetime` instant", None, zoom=12, database=False),
    Case("asof_tiles_z14", "z14 tiles, a map view's spread, `datetime` instant", None, zoom=14, database=False),
    Case("tile_304", "a z14 tile revalidated (`If-None-Match` → 304)", None, database=False),
    Case("deep_page", f"page {DEEP_PAGE:,} of {PAGE} (cursor for us, `offset` for peers)", 100),
)
AS_OF = frozenset({"asof_instant", "asof_interval", "asof_item", "asof_download", "asof_tiles_z12",
                   "asof_tiles_z14"})  # peers keep no history: ours only
OURS_ONLY = frozenset({"download"})  # no peer serves a layer as a file
# As-of tiles are asked of our service with its cache off only: cold against cold "now" tiles.
COLD_ONLY = frozenset({"asof_tiles_z12", "asof_tiles_z14"})
SEWER, TWO_PREDICATES = "utility='sewer'", "diameter_mm>500 AND material='HDPE'"
VIEW_TILES = (8, 5)  # a 2048 x 1280 pixel map view, in 256-pixel tiles


@dataclass(frozen=True)
class Probe:
    """Request parameters taken from the loaded data."""

    centre: tuple[float, float]
    bbox: tuple[float, float, float, float]
    bbox_rows: int
    fid: str
    utility: str
    tile: tuple[int, int, int]  # z, x (column), y (row)
    rows: int
    bbox_small: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0)
    bbox_small_rows: int = 0
    instant: str | None = None  # between two deliveries (bench/history.py)
    interval: str | None = None  # from one delivery to two later
    tiles: dict[int, list[tuple[int, int, int]]] | None = None  # zoom -> the view's tiles that hold data


def tile_of(lon: float, lat: float, z: int) -> tuple[int, int, int]:
    n = 1 << z
    x = int((lon + 180.0) / 360.0 * n)
    rad = math.radians(lat)
    y = int((1.0 - math.asinh(math.tan(rad)) / math.pi) / 2.0 * n)
    return z, x, y


def _box_with(conn: psycopg.Connection, table: sql.Composable, lon: float, lat: float,
              rows: int) -> tuple[tuple[float, float, float, float], int]:
    """Grow a box around the point until about `rows` segments intersect it (exactly, as the peers test)."""
    half, count = 0.00005, 0
    box = (lon, lat, lon, lat)
    for _ in range(120):
        box = (lon - half, lat - half * 0.75, lon + half, lat + half * 0.75)
        counted = conn.execute(sql.SQL(
            "SELECT count(*) FROM {} WHERE ST_Intersects(geom, ST_MakeEnvelope(%s, %s, %s, %s, 4490))"
        ).format(table), box).fetchone()
        count = int(counted[0]) if counted else 0
        if count >= rows:
            break
        half *= 1.1
    return tuple(round(v, 6) for v in box), count  # type: ignore[return-value]


def view_tiles(conn: psycopg.Connection, table: sql.Composable, lon: float, lat: float,
               z: int) -> list[tuple[int, int, int]]:
    """The tiles of a map view centred on the point at zoom z that hold at least one segment."""
    _z, cx, cy = tile_of(lon, lat, z)
    wide, high = VIEW_TILES
    found = []
    for y in range(cy - high // 2, cy - high // 2 + high):
        for x in range(cx - wide // 2, cx - wide // 2 + wide):
            row = conn.execute(sql.SQL(
                "SELECT EXISTS (SELECT 1 FROM {} WHERE geom && ST_Transform(ST_TileEnvelope(%s, %s, %s), 4490))"
            ).format(table), (z, x, y)).fetchone()
            if row and row[0]:
                found.append((z, x, y))
    return found


def probe(url: str, instants: list[str] | None = None) -> Probe:
    table = sql.Identifier("pipeline", LAYER)
    with psycopg.connect(url) as conn:
        row = conn.execute(sql.SQL(
            "SELECT avg(ST_X(c)), avg(ST_Y(c)) FROM (SELECT ST_Centroid(geom) AS c FROM {} "
            "TABLESAMPLE SYSTEM (2) REPEATABLE (7)) s").format(table)).fetchone()
        assert row and row[0] is not None, "the pipelines layer is empty"
        lon, lat = float(row[0]), float(row[1])
        box, count = _box_with(conn, table, lon, lat, BBOX_ROWS)  # every server fills one page of 100 from it
        small, small_count = _box_with(conn, table, lon, lat, 10)
        fid_row = conn.execute(sql.SQL(
            "SELECT fid FROM {} WHERE geom && ST_MakeEnvelope(%s, %s, %s, %s, 4490) ORDER BY fid LIMIT 1"
        ).format(table), box).fetchone()
        stats = conn.execute("SELECT row_count FROM ops.layer_stats WHERE layer_id = %s", (LAYER,)).fetchone()
        tiles = {z: view_tiles(conn, table, lon, lat, z) for z in (10, 12, 14)}
    assert fid_row and stats
    instant = interval = None
    if instants and len(instants) >= 7:  # the deliveries' instants (bench/history.py)
        instant = instants[4]  # after the 5th delivery, before the 6th
        interval = f"{instants[2]}/{instants[5]}"
    return Probe(centre=(lon, lat), bbox=box, bbox_rows=count, fid=str(fid_row[0]), utility="sewer",
                 tile=tile_of(lon, lat, 14), rows=int(stats[0]), bbox_small=small, bbox_small_rows=small_count,
                 instant=instant, interval=interval, tiles=tiles)


def _query(params: dict[str, str], suffix: str) -> str:
    text = urllib.parse.urlencode(params, safe=",'")
    return "?" + "&".join(p for p in (text, suffix) if p)


def tile_url(endpoint: Endpoint, tile: tuple[int, int, int], when: str | None = None) -> str:
    z, x, y = tile
    path = f"{z}/{y}/{x}" if endpoint.tile_order == "zyx" else f"{z}/{x}/{y}"
    query = "&".join(q for q in (endpoint.tile_suffix, urllib.parse.urlencode({"datetime": when}) if when else "")
                     if q)
    return f"{endpoint.server.base}/collections/{endpoint.collection}/tiles/WebMercatorQuad/{path}" + (
        f"?{query}" if query else "")


def case_instant(case: Case, p: Probe) -> str | None:
    """The `datetime` an as-of tile spread asks for (None for the other cases)."""
    return p.instant if case.zoom is not None and case.key in AS_OF else None


def case_paths(endpoint: Endpoint, case: Case, p: Probe) -> list[str] | None:
    """For a spread of tiles, every tile's path (wrk cycles through them); None for a single-URL case."""
    if case.zoom is None or not p.tiles:
        return None
    base = len(endpoint.server.base)
    return [tile_url(endpoint, t, case_instant(case, p))[base:] for t in p.tiles.get(case.zoom, [])]


def case_url(endpoint: Endpoint, case: Case, p: Probe, deep_url: str | None) -> str | None:
    """The URL this server is asked for in this case (a spread's first tile); None if it has no way to ask it."""
    base = f"{endpoint.server.base}/collections/{endpoint.collection}"
    items = f"{base}/items"
    suffix = endpoint.item_suffix
    page = {"limit": str(PAGE)}
    if case.key in AS_OF and (endpoint.name not in ("ours", "ours-nocache") or p.instant is None):
        return None
    if (case.key in OURS_ONLY and endpoint.name != "ours") or (case.key in COLD_ONLY
                                                               and endpoint.name != "ours-nocache"):
        return None
    match case.key:
        case "items_10" | "items_100" | "items_1000" | "items_100_c1" | "items_100_c64":
            return items + _query({"limit": case.key.split("_")[1]}, suffix)
        case "bbox_100" | "bbox_small":
            box = p.bbox if case.key == "bbox_100" else p.bbox_small
            params = {"bbox": ",".join(str(v) for v in box), "limit": str(PAGE)}
            if endpoint.bbox_crs:
                params["bbox-crs"] = endpoint.bbox_crs
            return items + _query(params, suffix)
        case "item":
            return f"{items}/{urllib.parse.quote(p.fid)}" + (f"?{suffix}" if suffix else "")
        case "asof_item":
            return f"{items}/{urllib.parse.quote(p.fid)}" + _query({"datetime": p.instant or ""}, suffix)
        case "cql2" | "cql2_two":
            text = SEWER if case.key == "cql2" else TWO_PREDICATES
            return items + _query({"filter": text, "filter-lang": "cql2-text", **page}, suffix)
        case "asof_instant" | "asof_interval":
            when = p.instant if case.key == "asof_instant" else p.interval
            return items + _query({"datetime": when or "", **page}, suffix)
        case "download" | "asof_download":
            download = f"{base}/download"
            params = {"f": "csv", "bbox": ",".join(str(v) for v in p.bbox)}
            return download + _query(params | ({"datetime": p.instant or ""} if case.key in AS_OF else {}), suffix)
        case "tiles_z10" | "tiles_z12" | "tiles_z14" | "asof_tiles_z12" | "asof_tiles_z14":
            tiles = (p.tiles or {}).get(case.zoom or 0) or [tile_of(*p.centre, case.zoom or 14)]
            return tile_url(endpoint, tiles[len(tiles) // 2], case_instant(case, p))
        case "tile_304":
            return tile_url(endpoint, p.tile)
        case "deep_page":
            if endpoint.name == "ours":
                return deep_url
            return items + _query({"limit": str(PAGE), "offset": str((DEEP_PAGE - 1) * PAGE)}, suffix)
    raise ValueError(case.key)


def _get(url: str, timeout: float = CHECK_TIMEOUT_S, headers: dict[str, str] | None = None) -> tuple[int, str, bytes]:
    status, headers_out, body = _get_with_headers(url, timeout, headers)
    return status, headers_out.get("Content-Type", ""), body


def _get_with_headers(url: str, timeout: float = CHECK_TIMEOUT_S,
                      headers: dict[str, str] | None = None) -> tuple[int, Any, bytes]:
    sent = {"Accept": "application/geo+json, application/json, */*"} | (headers or {})
    request = urllib.request.Request(url, headers=sent)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as answer:
            return answer.status, answer.headers, answer.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers, exc.read()
    except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
        return 0, {}, f"no answer within {timeout:.0f} s ({exc.__class__.__name__})".encode()


def revalidation_headers(url: str, credentials: dict[str, str]) -> dict[str, str] | None:
    """If-None-Match with the tile's ETag, if the server gives one and answers it with 304."""
    status, headers, _body = _get_with_headers(url, headers=credentials)
    etag = headers.get("ETag") if status == 200 else None
    if not etag:
        return None
    sent = credentials | {"If-None-Match": etag}
    again, _headers, _body = _get_with_headers(url, headers=sent)
    return sent if again == 304 else None


def follow_next(start: str, pages: int, credentials: dict[str, str] | None = None) -> str | None:
    """The URL of page `pages`, reached by following `next` links from `start` (page 1)."""
    url = start
    for _ in range(pages - 1):
        status, _type, body = _get(url, headers=credentials)
        if status != 200:
            return None
        links = json.loads(body).get("links", [])
        url = next((link["href"] for link in links if link.get("rel") == "next"), "")
        if not url:
            return None
    return url


def stride(rows: int, most: int = MAX_LIMIT) -> int:
    """The largest page size up to `most` that divides `rows`: pages of it end exactly after row `rows`."""
    return next(size for size in range(min(rows, most), 0, -1) if rows % size == 0)


def with_limit(url: str, limit: int) -> str:
    parts = urllib.parse.urlsplit(url)
    query = [(k, str(limit) if k == "limit" else v) for k, v in urllib.parse.parse_qsl(parts.query)]
    return urllib.parse.urlunsplit(parts._replace(query=urllib.parse.urlencode(query, safe=",'")))


def deep_page_url(first: str, page: int, size: int, credentials: dict[str, str] | None = None) -> str | None:
    """Page `page` of `size` rows, reached by following `next` links: in pages as large as the service serves
    that end exactly where that page begins, then at `size` (a `next` link carries only the position, so the
    page is the one 4,999 links of 100 rows reach, in 50 requests rather than 4,999)."""
    rows = (page - 1) * size
    big = stride(rows)
    url = follow_next(with_limit(first, big), rows // big + 1, credentials)
    return with_limit(url, size) if url else None


@dataclass(frozen=True)
class Check:
    ok: bool
    status: int
    bytes: int
    features: int | None
    note: str = ""
    seconds: float = 0.0  # the single request's time


def check(case: Case, url: str, credentials: dict[str, str] | None = None, bbox_small_rows: int = 0,
          timeout_s: float = CHECK_TIMEOUT_S) -> Check:
    started = time.perf_counter()
    status, content_type, body = _get(url, timeout_s, headers=credentials)
    return replace(_judge(case, status, content_type, body, bbox_small_rows),
                   seconds=round(time.perf_counter() - started, 3))


def _judge(case: Case, status: int, content_type: str, body: bytes, bbox_small_rows: int = 0) -> Check:
    if status == 204 and case.zoom is not None:  # a tile with nothing to draw at this zoom
        return Check(True, status, 0, 0, "no features at this zoom")
    if status != 200:
        return Check(False, status, len(body), None, body[:200].decode("utf-8", "replace"))
    if case.zoom is not None:
        import mapbox_vector_tile  # from the project's test extra, installed by `make bench`

        layers = mapbox_vector_tile.decode(body)
        count = sum(len(layer["features"]) for layer in layers.values())
        return Check(count > 0, status, len(body), count, "" if count else "empty tile")
    if case.key in ("download", "asof_download"):  # a header line, then one line per segment of the bbox
        rows = body.decode("utf-8", "replace").count("\n") - 1
        ok = content_type.startswith("text/csv") and rows > 0
        return Check(ok, status, len(body), rows, "" if ok else f"not a CSV with rows ({content_type})")
    try:
        document = json.loads(body)
    except ValueError:
        return Check(False, status, len(body), None, f"not JSON ({content_type})")
    if case.key in ("item", "asof_item"):
        ok = document.get("type") == "Feature"
        return Check(ok, status, len(body), 1 if ok else 0, "" if ok else "not a Feature")
    features = document.get("features")
    if not isinstance(features, list):
        return Check(False, status, len(body), None, "no features array")
    if case.key == "bbox_small":  # every segment the box holds (the probe counted them), on one page
        expected = bbox_small_rows or len(features) or 1
    else:
        expected = {"items_10": 10, "items_1000": 1000}.get(case.key, PAGE)
    if len(features) != expected:
        return Check(False, status, len(body), len(features), f"expected {expected} features")
    wrong = next((f for f in features if not _as_asked(case.key, f.get("properties") or {})), None)
    if wrong is not None:  # a server that ignored the filter answers a full page too
        return Check(False, status, len(body), len(features), f"filter not applied (feature {wrong.get('id')})")
    return Check(True, status, len(body), len(features))


def _as_asked(case_key: str, properties: dict[str, Any]) -> bool:
    """Whether a feature of a filtered page satisfies the filter asked for (True for other cases)."""
    if case_key == "cql2":
        return properties.get("utility") == "sewer"
    if case_key == "cql2_two":
        diameter = properties.get("diameter_mm")
        return isinstance(diameter, int | float) and diameter > 500 and properties.get("material") == "HDPE"
    return True


RUNS = 3  # timed runs per case and server: the median is reported, and the spread
# Each case: a warm-up, then RUNS timed runs of this length, for every server, then pgbench the same: with 5 s
# the whole of `make bench` stays within about 45 minutes on two cores (docs/benchmarks.md gives each part's time).
DURATION_S, WARMUP_S = 5, 1


@dataclass(frozen=True)
class Measurement:
    server: str
    case: str
    url: str | None
    check: Check | None
    result: dict[str, Any] | None  # the median run's numbers, with every run's rate and the spread
    slow: bool = False  # not loaded: one request alone took longer than a whole run
    cancelled: int = 0  # queries still running QUIET_WAIT_S after the run, cancelled
    load_before: float | None = None  # 1-minute load average as the first timed run started
    paths: int = 0  # a spread: how many different URLs wrk cycled through
    largest_bytes: int = 0  # a spread on our cached server: its largest tile (each asked before the runs)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def summarise(runs: list[wrk.WrkResult]) -> dict[str, Any]:
    """The median run by rate, with every run's rate and the spread (max - min) / median."""
    ordered = sorted(runs, key=lambda r: r.requests_per_s)
    median = ordered[len(ordered) // 2]
    rates = [r.requests_per_s for r in runs]
    spread = (max(rates) - min(rates)) / median.requests_per_s if median.requests_per_s else 0.0
    return median.as_dict() | {"runs": rates, "spread": round(spread, 3),
                               "failed": sum(r.failed for r in runs)}


def case_settings(case: Case, settings: wrk.WrkSettings) -> wrk.WrkSettings:
    connections = case.connections or settings.connections
    return replace(settings, connections=connections, threads=min(settings.threads, connections))


# Case groups for `bench/run.py --cases`: the full run takes over an hour on two cores.
GROUPS = {
    "items": ("items_10", "items_100", "items_100_c1", "items_100_c64", "items_1000"),
    "bbox": ("bbox_100", "bbox_small"),
    "item": ("item",),
    "filter": ("cql2", "cql2_two"),
    "asof": ("asof_instant", "asof_interval", "asof_item", "download", "asof_download", "asof_tiles_z12",
             "asof_tiles_z14"),
    "tiles": ("tiles_z10", "tiles_z12", "tiles_z14", "tile_304"),
    "deep": ("deep_page",),
}


def selected_cases(names: str | None) -> frozenset[str] | None:
    """The case keys that a comma-separated list of groups (GROUPS) and case keys names; None: every case."""
    if not names:
        return None
    keys = {c.key for c in CASES}
    chosen: set[str] = set()
    for name in (n.strip() for n in names.split(",") if n.strip()):
        if name in GROUPS:
            chosen.update(GROUPS[name])
        elif name in keys:
            chosen.add(name)
        else:
            raise SystemExit(f"--cases: no case or group {name!r} (groups: {', '.join(GROUPS)}; "
                             f"cases: {', '.join(sorted(keys))})")
    return frozenset(chosen)


def measure_endpoint(endpoint: Endpoint, p: Probe, settings: wrk.WrkSettings, warmup_s: int,
                     database_url: str, say: Any = print, runs: int = RUNS,
                     only: frozenset[str] | None = None) -> list[Measurement]:
    """Every case the endpoint answers (only those in `only`, when given), on the server as it runs: one
    start per server, never one per case."""
    deep_url = None
    if endpoint.name == "ours" and (only is None or "deep_page" in only):
        started = time.perf_counter()
        first = case_url(endpoint, next(c for c in CASES if c.key == "items_100"), p, None)
        deep_url = deep_page_url(first, DEEP_PAGE, PAGE, endpoint.headers) if first else None
        say(f"  ours: page {DEEP_PAGE} cursor found by following next links in {time.perf_counter() - started:.0f}s"
            if deep_url else f"  ours: no next-link chain to page {DEEP_PAGE}")
    out = []
    # Many connections last: a slow server's backlog from them must not spill into the other cases.
    for case in sorted(CASES, key=lambda c: (c.connections or 0) > 8):
        if (endpoint.cases is not None and case.key not in endpoint.cases) or (only is not None
                                                                               and case.key not in only):
            continue
        out.append(measure_case(endpoint, case, p, settings, warmup_s, database_url, say, runs, deep_url))
    return out


def measure_case(endpoint: Endpoint, case: Case, p: Probe, settings: wrk.WrkSettings, warmup_s: int,
                 database_url: str, say: Any, runs: int, deep_url: str | None) -> Measurement:
    """One case on one server: checked by one request, then `runs` timed wrk runs after a warm-up."""
    url = case_url(endpoint, case, p, deep_url)
    paths = case_paths(endpoint, case, p)
    headers: dict[str, str] | None = dict(endpoint.headers)
    if url and case.key == "tile_304":
        headers = revalidation_headers(url, endpoint.headers)
    if url is None or headers is None:
        return Measurement(endpoint.name, case.key, None, None, None)
    # A request slower alone than a whole run cannot be timed by one: its single time is its figure.
    slow_s = max(float(settings.duration_s), 1.0)
    timeout_s = max(CHECK_TIMEOUT_S, 3 * slow_s)
    checked = (check(case, url, headers, p.bbox_small_rows, timeout_s) if case.key != "tile_304"
               else Check(True, 304, 0, None))
    if checked.ok and checked.seconds > slow_s:  # the first request may have paid for a cold cache: ask again
        checked = check(case, url, headers, p.bbox_small_rows, timeout_s)
    if checked.ok and case.key == "deep_page":
        checked = not_the_first_page(checked, endpoint, p, url, headers)
    if checked.status == 0 or (checked.ok and checked.seconds > slow_s):
        # a query the client gave up on may still run: nobody waits for it, so it is cancelled at once
        cancelled = quiesce(database_url, wait_s=1 if checked.status == 0 else QUIET_WAIT_S)
        say(f"  {endpoint.name} {case.key}: one request alone took {checked.seconds:.1f}s"
            f"{' (gave up)' if checked.status == 0 else ''}; not loaded")
        return Measurement(endpoint.name, case.key, url, checked, None, slow=True, cancelled=cancelled)
    if not checked.ok:
        say(f"  {endpoint.name} {case.key}: not measured ({checked.status} {checked.note})")
        return Measurement(endpoint.name, case.key, url, checked, None)
    own = case_settings(case, settings)
    largest = 0
    if paths and endpoint.name == "ours":  # warm: every tile in every worker's cache before timing
        largest = warm_tiles(endpoint.server.base, paths, headers)
    if checked.seconds < WARMUP_BELOW_S:  # a slower request has warmed what it needs by being checked
        wrk.run(url, replace(own, duration_s=warmup_s), headers, paths)
        settle(url, own.connections, headers, database_url, timeout_s)
    load = load_average()
    results, cancelled = [], 0
    for _ in range(runs):
        results.append(wrk.run(url, own, headers, paths))
        cancelled += settle(url, own.connections, headers, database_url, timeout_s)
    result = summarise(results)
    say(f"  {endpoint.name} {case.key}: {result['requests_per_s']:,.1f} req/s (runs {result['runs']}), "
        f"p50 {result['latency_ms']['p50']} ms, p99 {result['latency_ms']['p99']} ms"
        + (f", {result['failed']} failed" if result["failed"] else "")
        + (f", {cancelled} queries still running after a run cancelled" if cancelled else ""))
    return Measurement(endpoint.name, case.key, url, checked, result, cancelled=cancelled, load_before=load,
                       paths=len(paths or []), largest_bytes=largest)


def not_the_first_page(checked: Check, endpoint: Endpoint, p: Probe, url: str, headers: dict[str, str]) -> Check:
    """The deep page must not be page 1 again: a server that ignores `offset` (or a cursor) answers 100 too."""
    first = case_url(endpoint, next(c for c in CASES if c.key == "items_100"), p, None)
    ids = [feature_ids(u, headers) for u in (first or "", url)]
    if ids[0] and ids[0] == ids[1]:
        return replace(checked, ok=False, note="the same features as page 1")
    return checked


def feature_ids(url: str, headers: dict[str, str]) -> list[str]:
    status, _type, body = _get(url, headers=headers)
    if status != 200:
        return []
    return [str(f.get("id")) for f in json.loads(body).get("features", [])]


def warm_tiles(base: str, paths: list[str], headers: dict[str, str]) -> int:
    """Every tile of the spread, often enough that each worker of a caching server holds each one (connections
    land on a worker by chance); returns the largest tile's bytes."""
    largest = 0
    for _ in range(3 * WORKERS):
        for path in paths:
            status, _type, body = _get(base + path, headers=headers)
            largest = max(largest, len(body) if status == 200 else 0)
    return largest


DRAIN_REQUESTS = 2 * WORKERS  # enough to wait behind what each worker still holds, not one per connection
SETTLE_S = 3.0  # after a run, how long the queries it left may go on by themselves before they are cancelled
OLD_QUERY_S = 0.5  # only queries running longer than this are cancelled: never a health probe's or a fresh one


def settle(url: str, connections: int, headers: dict[str, str] | None, database_url: str,
           timeout_s: float = CHECK_TIMEOUT_S) -> int:
    """Between runs, so that no run pays for the one before: the queries the run left behind (wrk closed its
    connections, the server goes on with their requests) end or are cancelled, then a few requests wait
    behind whatever the server still holds. Returns how many queries were cancelled."""
    cancelled = quiesce(database_url, wait_s=SETTLE_S)
    drain(url, min(connections, DRAIN_REQUESTS), headers, timeout_s)
    return cancelled + quiesce(database_url, wait_s=SETTLE_S)


def drain(url: str, connections: int, headers: dict[str, str] | None = None,
          timeout_s: float = CHECK_TIMEOUT_S) -> None:
    """Wait until the server has worked off what a run left queued: a slow server still holds the requests
    wrk gave up on. A few requests at once, answered after the backlog (or given up after `timeout_s`)."""
    with ThreadPoolExecutor(connections) as pool:
        list(pool.map(lambda _n: _get_with_headers(url, timeout_s, headers), range(connections)))


# Clients' queries only: never autovacuum's workers, never this connection's own.
ACTIVE = ("SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid() "
          "AND state = 'active' AND backend_type = 'client backend'")
CANCEL_OLD = ("SELECT count(pg_cancel_backend(pid)) FROM pg_stat_activity WHERE datname = current_database() "
              "AND pid <> pg_backend_pid() AND state = 'active' AND backend_type = 'client backend' "
              "AND query_start < now() - make_interval(secs => %s)")


def quiesce(database_url: str, wait_s: float = QUIET_WAIT_S, cancel_for_s: float = QUIET_WAIT_S) -> int:
    """Wait up to `wait_s` for the queries a load left behind to end (a client that gave up does not stop the
    server's query), then cancel those still running, and again as a server's backlog starts new ones, until
    none runs (or `cancel_for_s` has passed). Returns how many were cancelled."""
    cancelled = 0
    with psycopg.connect(database_url, autocommit=True) as conn:
        deadline = time.monotonic() + wait_s
        while conn.execute(ACTIVE).fetchone():
            if time.monotonic() >= deadline:
                break
            time.sleep(0.25)
        else:
            return 0
        deadline = time.monotonic() + cancel_for_s
        while conn.execute(ACTIVE).fetchone() and time.monotonic() < deadline:
            row = conn.execute(CANCEL_OLD, (OLD_QUERY_S,)).fetchone()
            cancelled += int(row[0]) if row else 0
            time.sleep(0.25)
    return cancelled
