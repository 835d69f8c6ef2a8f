"""Hardening of the HTTP service, against the real service: rate limits, caps (body, CQL2, statement time),
security headers and CORS, no stack trace to clients, and tiles of row-ruled layers filtered per caller.

The module serves its own clone with deliberately small limits (a 2 s statement timeout, bodies of a
few KiB, small CQL2 caps, one allowed CORS origin); the rate limit has a server of its own, so the
other tests never meet it.
"""

import contextlib
import math
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

import httpx
import mapbox_vector_tile
import psycopg
import pytest
from conftest import ADMIN_KEY, TEST_KEYS, cloned_database

from gis.security import keys

ORIGIN = "https://map.example.org"
LIMITS = {
    "STATEMENT_TIMEOUT_MS": "2000",
    "MAX_BODY_BYTES": "1000",
    "MAX_UPLOAD_BYTES": "5000",
    "CQL2_MAX_NODES": "50",
    "CQL2_MAX_DEPTH": "5",
    "CQL2_MAX_COORDINATES": "400",
    "CORS_ORIGINS": f"{ORIGIN}, https://other.example.org",
}


@dataclass(frozen=True)
class Police:
    key: str
    jurisdiction: str


@dataclass(frozen=True)
class Service:
    url: str
    db_url: str
    police: tuple[Police, Police]  # two stations' keys
    http: httpx.Client


@pytest.fixture(scope="module")
def hardening_db(server_url: str, template_db: str) -> Iterator[str]:
    with cloned_database(server_url, template_db, "gis_test_hardening") as url:
        yield url


@contextlib.contextmanager
def _serve_with(serve_api: Callable[[str], AbstractContextManager[str]], db_url: str,
                env: dict[str, str]) -> Iterator[str]:
    """The service on db_url with GIS_HTTP_* settings from env (read by the server when it starts)."""
    with contextlib.ExitStack() as stack:
        with pytest.MonkeyPatch.context() as patch:
            for name, value in env.items():
                patch.setenv(f"GIS_HTTP_{name}", value)
            url = stack.enter_context(serve_api(db_url))
        yield url


@pytest.fixture(scope="module")
def service(hardening_db: str, serve_api: Callable[[str], AbstractContextManager[str]]) -> Iterator[Service]:
    with psycopg.connect(hardening_db) as conn:
        stations = [r[0] for r in conn.execute(
            "SELECT j.station FROM policing.police_jurisdictions j WHERE EXISTS (SELECT 1 FROM policing.incidents i "
            "WHERE ST_Intersects(j.geom, i.geom)) ORDER BY j.station LIMIT 2")]
        assert len(stations) == 2
        police = tuple(Police(keys.create_key(conn, f"police {s}", "policing_app", "", {"jurisdiction": s})[1], s)
                       for s in stations)
        conn.commit()
    with _serve_with(serve_api, hardening_db, LIMITS) as url, httpx.Client(base_url=url, timeout=60) as http:
        yield Service(url, hardening_db, (police[0], police[1]), http)


def _admin() -> dict[str, str]:
    return {"X-API-Key": ADMIN_KEY}


def _is_exception(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, (response.status_code, response.text[:300])
    assert response.headers["content-type"].startswith("application/json")
    body: dict[str, Any] = response.json()
    assert body["code"] == code, body
    return body


# -- rate limits ---------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def limited_url(hardening_db: str, serve_api: Callable[[str], AbstractContextManager[str]]) -> Iterator[str]:
    """A server allowing bursts of 3 requests, refilled at one request every 10 s, per caller."""
    with _serve_with(serve_api, hardening_db, {"RATE_PER_SECOND": "0.1", "RATE_BURST": "3"}) as url:
        yield url


def test_rate_limit_is_per_key_with_retry_after(limited_url: str) -> None:
    admin = {"X-API-Key": TEST_KEYS["admin"]}
    with httpx.Client(base_url=limited_url, timeout=30) as http:
        assert [http.get("/conformance", headers=admin).status_code for _ in range(3)] == [200, 200, 200]
        refused = http.get("/conformance", headers=admin)
        body = _is_exception(refused, 429, "TooManyRequests")
        assert 1 <= int(refused.headers["retry-after"]) <= 10  # one token comes back within 10 s
        assert "per second" in body["description"]
        # another key has its own bucket, and so has the anonymous caller's address
        assert http.get("/conformance", headers={"X-API-Key": TEST_KEYS["analyst"]}).status_code == 200
        assert http.get("/conformance").status_code == 200


def test_rate_limit_counts_wrong_credentials_against_the_address(limited_url: str) -> None:
    with httpx.Client(base_url=limited_url, timeout=30) as http:
        statuses = [http.get("/conformance", headers={"X-API-Key": f"gk_guess{i:03d}_{'x' * 40}"}).status_code
                    for i in range(4)]
        # the address may already have spent tokens in the test before: guesses run out of them all the same
        assert statuses[-1] == 429 and set(statuses) <= {401, 429}, statuses
        assert http.get("/conformance").status_code == 429  # the same address, anonymous now


# -- caps ----------------------------------------------------------------------------------------------

def test_body_over_the_cap_is_413_naming_the_limit(service: Service) -> None:
    r = service.http.post("/collections/roads/items", content=b"x" * 1001, headers=_admin())
    body = _is_exception(r, 413, "PayloadTooLarge")
    assert body["limit"] == 1000 and body["parameter"] == "body"
    assert "GIS_HTTP_MAX_BODY_BYTES" in body["description"]


def test_upload_endpoints_take_the_upload_cap(service: Service) -> None:
    url = "/api/planning/overlap-checks"
    files = {"file": ("plan.geojson", b" " * 6000, "application/geo+json")}
    body = _is_exception(service.http.post(url, files=files, headers=_admin()), 413, "PayloadTooLarge")
    assert body["limit"] == 5000 and "GIS_HTTP_MAX_UPLOAD_BYTES" in body["description"]
    # below the upload cap but above the general one: read, and judged on its content (not the size)
    small = {"file": ("plan.geojson", b"{}" + b" " * 2000, "application/geo+json")}
    assert service.http.post(url, files=small, headers=_admin()).status_code == 400


def test_chunked_body_is_cut_off_at_the_cap(service: Service) -> None:
    def chunks() -> Iterator[bytes]:
        for _ in range(10):
            yield b"{" + b" " * 999

    r = service.http.post("/api/planning/overlap-checks", content=chunks(),
                          headers={**_admin(), "Content-Type": "application/json"})
    body = _is_exception(r, 413, "PayloadTooLarge")
    assert body["limit"] == 5000


def test_limit_above_the_maximum_is_served_as_the_maximum(service: Service) -> None:
    body = service.http.get("/collections/observations/items", params={"limit": 10**9, "skipGeometry": "true",
                                                                     "properties": ""}).json()
    assert body["numberReturned"] == 10_000
    _is_exception(service.http.get("/collections/roads/items", params={"limit": 0}), 400, "InvalidParameterValue")


def _in_filter(items: int) -> str:
    """An IN filter of `items` values: 1 (IN) + 1 (property) + items nodes."""
    return "road_class IN (" + ",".join(f"'v{i}'" for i in range(items)) + ")"


def test_cql2_node_count_is_capped(service: Service) -> None:
    assert service.http.get("/collections/roads/items", params={"filter": _in_filter(48)}).status_code == 200
    body = _is_exception(service.http.get("/collections/roads/items", params={"filter": _in_filter(49)}),
                         400, "InvalidParameterValue")
    assert body["parameter"] == "filter" and "51" in body["description"] and "50" in body["description"]


def test_cql2_depth_is_capped(service: Service) -> None:
    # NOT x NOT (comparison (property, literal)): depth = NOTs + 2
    assert service.http.get("/collections/roads/items", params={"filter": "NOT " * 3 + "lanes = 2"}).status_code == 200
    body = _is_exception(service.http.get("/collections/roads/items", params={"filter": "NOT " * 4 + "lanes = 2"}),
                         400, "InvalidParameterValue")
    assert body["parameter"] == "filter" and "nested" in body["description"]


def _zigzag(vertices: int) -> str:
    points = [f"{123.0 + 0.9 * i / vertices:.4f} {41.6 + 0.3 * math.sin(i * 0.7):.4f}" for i in range(vertices)]
    return f"LINESTRING({','.join(points)})"


def test_cql2_geometry_coordinates_are_capped(service: Service) -> None:
    body = _is_exception(service.http.get("/collections/roads/items", params={
        "filter": f"S_INTERSECTS(geometry, {_zigzag(401)})"}), 400, "InvalidParameterValue")
    assert body["parameter"] == "filter" and "401 coordinates" in body["description"]


def test_runaway_query_is_cancelled_with_a_clear_503(service: Service) -> None:
    # Every one of 23,000 points lies in the line's box, and none within 1 m of it: each costs a distance to 300
    # vertices on the ellipsoid (9 s in all, measured with psql)
    started = time.monotonic()
    r = service.http.get("/collections/observations/items", params={
        "filter": f"S_DWITHIN(geometry, {_zigzag(300)}, 1)", "limit": 5})
    elapsed = time.monotonic() - started
    body = _is_exception(r, 503, "QueryTimeout")
    assert "2 s" in body["description"] and "cancelled" in body["description"]
    assert elapsed < 6.0, elapsed  # cancelled at the timeout, not run to the end (nor run twice)
    assert service.http.get("/collections/observations/items", params={"limit": 1}).status_code == 200


# -- headers -------------------------------------------------------------------------------------------

SECURITY = ("x-content-type-options", "referrer-policy", "x-frame-options", "content-security-policy")


@pytest.mark.parametrize("path", ["/", "/collections?f=html", "/collections/roads/items?limit=2",
                                  "/collections/nothing-here", "/collections/roads/items?bbox=1"])
def test_security_headers_on_every_response(service: Service, path: str) -> None:
    r = service.http.get(path)
    assert r.headers["x-content-type-options"] == "nosniff"
    assert r.headers["referrer-policy"] == "no-referrer"
    assert r.headers["x-frame-options"] == "DENY"
    csp = dict(d.strip().split(" ", 1) for d in r.headers["content-security-policy"].split(";"))
    assert csp["script-src"].startswith("'self'") and "'unsafe-inline'" not in csp["script-src"]
    assert csp["worker-src"].split() == ["'self'", "blob:"] and csp["child-src"].split() == ["'self'", "blob:"]
    assert set(csp["img-src"].split()) == {"'self'", "data:", "blob:"}
    assert csp["style-src"] == "'self' 'unsafe-inline'" and csp["connect-src"] == "'self'"
    assert csp["frame-ancestors"] == "'none'"


def test_cors_preflight_for_an_allowed_origin_needs_no_credentials(service: Service) -> None:
    r = service.http.options("/collections/incidents/items", headers={
        "Origin": ORIGIN, "Access-Control-Request-Method": "GET",
        "Access-Control-Request-Headers": "x-api-key"})
    assert r.status_code == 204
    assert r.headers["access-control-allow-origin"] == ORIGIN
    assert "X-API-Key" in r.headers["access-control-allow-headers"]
    assert "GET" in r.headers["access-control-allow-methods"]
    assert "access-control-allow-credentials" not in r.headers


def test_cors_headers_only_for_allowed_origins(service: Service) -> None:
    allowed = service.http.get("/collections", headers={"Origin": ORIGIN})
    assert allowed.headers["access-control-allow-origin"] == ORIGIN
    assert "ETag" in allowed.headers["access-control-expose-headers"]
    assert "Origin" in allowed.headers["vary"]
    other = service.http.get("/collections", headers={"Origin": "https://evil.example"})
    assert other.status_code == 200 and "access-control-allow-origin" not in other.headers
    preflight = service.http.options("/collections", headers={"Origin": "https://evil.example",
                                                              "Access-Control-Request-Method": "GET"})
    assert _is_exception(preflight, 403, "Forbidden")["parameter"] == "Origin"


def test_no_cors_by_default(client: httpx.Client) -> None:
    r = client.get("/collections", headers={"Origin": ORIGIN})
    assert "access-control-allow-origin" not in r.headers
    preflight = client.options("/collections", headers={"Origin": ORIGIN, "Access-Control-Request-Method": "GET"})
    assert preflight.status_code == 405 and "access-control-allow-origin" not in preflight.headers


# -- no stack trace --------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def broken(server_url: str, template_db: str,
           serve_api: Callable[[str], AbstractContextManager[str]]) -> Iterator[str]:
    """A service whose database lost two tables under it (roads, the job store): real internal errors."""
    with cloned_database(server_url, template_db, "gis_test_broken") as url, serve_api(url) as base:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("ALTER TABLE base.roads RENAME TO roads_gone")
            conn.execute("ALTER TABLE ops.jobs RENAME TO jobs_gone")
        yield base


def _no_trace(response: httpx.Response) -> None:
    text = response.text
    for leak in ("Traceback", 'File "', "psycopg", "roads_gone", "jobs_gone", "does not exist", "SELECT"):
        assert leak not in text, (leak, text[:500])


def test_internal_error_is_a_plain_500(broken: str) -> None:
    r = httpx.get(f"{broken}/collections/roads/items", timeout=30)
    assert r.status_code == 500
    assert r.json() == {"code": "ServerError", "description": "internal error"}
    assert r.headers["x-content-type-options"] == "nosniff" and "content-security-policy" in r.headers
    _no_trace(r)


def test_internal_error_in_a_pygeoapi_route_shows_no_trace(broken: str) -> None:
    r = httpx.get(f"{broken}/jobs", headers=_admin(), timeout=30)
    assert r.status_code >= 500
    assert r.headers["content-type"].startswith("application/json")
    assert "code" in r.json()
    _no_trace(r)


# -- tiles of a row-ruled layer --------------------------------------------------------------------------

TILE = "/collections/incidents/tiles/WebMercatorQuad/0/0/0"


def _fids(response: httpx.Response) -> set[str]:
    if response.status_code == 204:
        return set()
    assert response.status_code == 200, response.text[:300]
    return {f["properties"]["fid"] for f in mapbox_vector_tile.decode(response.content)["incidents"]["features"]}


def _inside(db_url: str, station: str) -> set[str]:
    with psycopg.connect(db_url) as conn:
        return {r[0] for r in conn.execute(
            "SELECT i.fid FROM policing.incidents i WHERE EXISTS (SELECT 1 FROM policing.police_jurisdictions j "
            "WHERE j.station = %s AND ST_Intersects(j.geom, i.geom))", (station,))}


def test_row_ruled_tile_holds_only_the_callers_rows(service: Service) -> None:
    first, second = service.police
    for police in (first, second):
        r = service.http.get(TILE, headers={"X-API-Key": police.key})
        assert _fids(r) == _inside(service.db_url, police.jurisdiction)
        assert r.headers["cache-control"].startswith("private")
    with psycopg.connect(service.db_url) as conn:
        every = {r[0] for r in conn.execute("SELECT fid FROM policing.incidents")}
    assert _fids(service.http.get(TILE, headers=_admin())) == every


def test_row_ruled_tiles_are_cached_and_tagged_per_caller(service: Service) -> None:
    first, second = service.police
    # z3, row 2, column 6 (lon 90-135, lat 41-67) holds the city; a tile neither caller has asked for yet
    path = "/collections/incidents/tiles/WebMercatorQuad/3/2/6"
    a1 = service.http.get(path, headers={"X-API-Key": first.key})
    b1 = service.http.get(path, headers={"X-API-Key": second.key})  # right after: the cache holds a1's tile
    assert _fids(a1) == _inside(service.db_url, first.jurisdiction)
    assert _fids(b1) == _inside(service.db_url, second.jurisdiction)
    assert a1.headers["etag"] != b1.headers["etag"]
    # a's ETag says nothing about b's tile: b gets its own tile, not a 304
    b2 = service.http.get(path, headers={"X-API-Key": second.key, "If-None-Match": a1.headers["etag"]})
    assert b2.status_code == 200 and _fids(b2) == _fids(b1)
    a2 = service.http.get(path, headers={"X-API-Key": first.key, "If-None-Match": a1.headers["etag"]})
    assert a2.status_code == 304


def test_row_ruled_tile_without_the_claim_is_empty(service: Service) -> None:
    with psycopg.connect(service.db_url) as conn:
        _record, key = keys.create_key(conn, "police without a station", "policing_app", "")
        conn.commit()
    assert service.http.get(TILE, headers={"X-API-Key": key}).status_code == 204


def test_chromium_refuses_a_script_injected_into_a_page(service: Service) -> None:
    """On our pages (here pygeoapi's process list, rendered from our templates) Chromium, applying our CSP, runs
    no inline script: one injected into the page after the fact is refused, and is the only violation."""
    from playwright.sync_api import sync_playwright

    path = "/processes?f=html"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path="/usr/bin/chromium", headless=True)
        try:
            page = browser.new_page()
            page.add_init_script("window.cspViolations = []; document.addEventListener('securitypolicyviolation', "
                                 "e => window.cspViolations.push([e.effectiveDirective, e.blockedURI]));")
            page.goto(service.url + path, wait_until="load")
            page.evaluate("() => { const s = document.createElement('script'); s.textContent = 'window.injected = 1';"
                          " document.body.appendChild(s); }")
            page.wait_for_timeout(300)  # violation events are dispatched asynchronously
            violations = page.evaluate("() => window.cspViolations")
            injected = page.evaluate("() => window.injected === 1")
        finally:
            browser.close()
    assert violations == [["script-src-elem", "inline"]], violations  # only the injected script
    assert not injected
