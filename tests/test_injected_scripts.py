"""Injected scripts never run (issue 15, item 5), shown in a real browser: Debian's Chromium, headless, driven by
Playwright against the real service.

A `<script>` (and an `<img onerror>`) stored in a feature's attribute and in its id, one sent in a query
parameter that an error page echoes, and one in an uploaded file's name that the overlap report shows: each
page is opened in Chromium, which must show the text as text and run none of it. The pages carry no inline
script of their own, and the Content-Security-Policy allows none (no hash, no nonce, no 'unsafe-inline').
"""

import base64
import re
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from urllib.parse import quote

import httpx
import psycopg
import pytest
from conftest import ADMIN_HEADERS, cloned_database
from playwright.sync_api import Browser, sync_playwright

from gis.rendering import Drawing, Shape, svg

CHROMIUM = "/usr/bin/chromium"
# Each payload sets window.pwned when it runs; the page must show it as text instead.
SCRIPT = "<script>window.pwned = 'script'</script>"
IMAGE = "<img src=x onerror=\"window.pwned = 'img'\">"
SVG_BREAKOUT = "</title></a></svg><script>window.pwned = 'svg'</script>"
# In an id, which is a path segment (no "/"): an element inside the map's <title>, an HTML integration point.
ID_PAYLOAD = "R<img src=x onerror=\"window.pwned = 'id'\">"


@dataclass(frozen=True)
class Poisoned:
    url: str
    fid: str  # a road whose id and name carry the payloads


@pytest.fixture(scope="module")
def poisoned(server_url: str, template_db: str,
             serve_api: Callable[[str], AbstractContextManager[str]]) -> Iterator[Poisoned]:
    """A clone whose first road has a script in its name and its id (as a delivery could bring them)."""
    fid = ID_PAYLOAD
    with cloned_database(server_url, template_db, "gis_test_injected") as db_url:
        with psycopg.connect(db_url) as conn:
            conn.execute("UPDATE base.roads SET fid = %s, name = %s WHERE fid = (SELECT min(fid) FROM base.roads)",
                         (fid, SCRIPT + IMAGE))
            conn.commit()
        with serve_api(db_url) as url:
            yield Poisoned(url, fid)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, headless=True)
        yield launched
        launched.close()


@dataclass(frozen=True)
class Opened:
    status: int
    text: str  # what a reader sees
    pwned: object  # window.pwned after the page settled: None unless a payload ran
    dialogs: int
    csp: str


def _open(browser: Browser, url: str) -> Opened:
    context = browser.new_context(extra_http_headers=ADMIN_HEADERS)
    try:
        page = context.new_page()
        dialogs: list[str] = []
        page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
        response = page.goto(url, wait_until="load")
        assert response is not None
        page.wait_for_timeout(300)  # an onerror handler fires after the image fails
        return Opened(response.status, page.inner_text("body"), page.evaluate("() => window.pwned ?? null"),
                      len(dialogs), response.headers.get("content-security-policy", ""))
    finally:
        context.close()


def _script_src(csp: str) -> list[str]:
    return next(d for d in csp.split(";") if d.strip().startswith("script-src")).split()[1:]


def test_script_in_a_feature_attribute_is_shown_not_run(browser: Browser, poisoned: Poisoned) -> None:
    item = f"{poisoned.url}/collections/roads/items/{quote(poisoned.fid, safe='')}"
    pages = (f"{poisoned.url}/collections/roads/items?f=html&limit=5&sortby=-id", f"{item}?f=html",
             f"{item}/history?f=html")
    for url in pages:
        opened = _open(browser, url)
        assert opened.status == 200, url
        assert opened.pwned is None and opened.dialogs == 0, (url, opened.pwned)
        assert SCRIPT in opened.text or "/history" in url, url  # the attribute is there, as text
        assert ID_PAYLOAD in opened.text, url  # the id too, in the table (and the map's tooltip)
        assert _script_src(opened.csp) == ["'self'"]


def test_script_in_a_query_parameter_echoed_by_an_error_page_is_shown_not_run(browser: Browser,
                                                                               poisoned: Poisoned) -> None:
    for url, echoed in ((f"{poisoned.url}/collections/roads/items?f=html&sortby={quote(SCRIPT + IMAGE)}", SCRIPT),
                        (f"{poisoned.url}/collections/roads/items?f=html&properties={quote(SCRIPT)}", SCRIPT),
                        (f"{poisoned.url}/catalog/items/{quote(IMAGE, safe='')}?f=html", IMAGE)):
        opened = _open(browser, url)
        assert opened.status in (400, 404), (url, opened.status)
        assert opened.pwned is None and opened.dialogs == 0, (url, opened.pwned)
        assert echoed in opened.text, (url, opened.text[:300])  # echoed, as text
        assert _script_src(opened.csp) == ["'self'"]


def test_script_in_an_uploaded_file_name_is_shown_not_run_in_the_report(browser: Browser, poisoned: Poisoned) -> None:
    proposal = (b'{"type": "Polygon", "coordinates": [[[123.40, 41.75], [123.402, 41.75], [123.402, 41.752], '
                b'[123.40, 41.752], [123.40, 41.75]]]}')
    name = f"{SCRIPT}{IMAGE}.geojson"
    with httpx.Client(base_url=poisoned.url, headers=ADMIN_HEADERS, timeout=60) as http:
        started = http.post("/processes/overlap-check/execution", headers={"Prefer": "respond-async"}, json={
            "inputs": {"file": base64.b64encode(proposal).decode(), "filename": name, "format": "html"}})
        assert started.status_code == 201, started.text[:300]
        job = started.headers["location"]
        for _ in range(120):
            if http.get(job).json()["status"] in ("successful", "failed"):
                break
            time.sleep(0.5)
        assert http.get(job).json()["status"] == "successful"
    opened = _open(browser, f"{job}/results")
    assert opened.status == 200
    assert opened.pwned is None and opened.dialogs == 0, opened.pwned
    assert IMAGE in opened.text  # the name as shown (its last path part), as text
    assert _script_src(opened.csp) == ["'self'"]


def test_no_page_carries_an_inline_script(poisoned: Poisoned) -> None:
    """Every HTML page the landing page links to, the process and job pages and an error page: scripts only by
    src (the web map's, from /static), and a policy that allows no inline script at all."""
    with httpx.Client(base_url=poisoned.url, headers={**ADMIN_HEADERS, "Accept": "text/html"}, timeout=60) as http:
        pages = [link["href"] for link in http.get("/", params={"f": "json"}).json()["links"]
                 if link["type"].startswith("text/html")]
        pages += ["/processes", "/processes/police-nearest", "/jobs", "/collections/roads/items", "/catalog/items",
                  "/collections/dem", "/collections/roads/items?bbox=x"]
        assert len(pages) >= 10
        for href in pages:
            r = http.get(href)
            assert r.headers["content-type"].startswith("text/html"), href
            scripts = re.findall(rb"<script\b([^>]*)>", r.content, re.I)
            assert all(re.search(rb'\ssrc="/static/', s) for s in scripts), (href, scripts)
            assert _script_src(r.headers["content-security-policy"]) == ["'self'"], href


def test_svg_text_is_escaped() -> None:
    """A drawing's tooltips and labels are text: markup in them comes out escaped, never as elements."""
    drawn = svg(Drawing(10, 10, [Shape("circle", {"cx": 1, "cy": 1, "r": "1\" onload=\"x"}, SVG_BREAKOUT,
                                       href="javascript:x\"><script>", text="<b>")]))
    assert "<script>" not in drawn and "</svg><" not in drawn and "<b>" not in drawn
    assert 'onload="x' not in drawn
    assert "&lt;/title&gt;" in drawn and "&lt;b&gt;" in drawn
