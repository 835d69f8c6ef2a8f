"""Feature ids with reserved characters (`/`, `%`, `?`, `#`, space, non-ASCII) on the real service: each is
reachable at /collections/{id}/items/{featureId}, edited there, and every link the service writes to it (Location,
self, history, HTML pages) leads back to it when followed as it is; OWSLib reaches ids with a slash too.
"""

import re
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from html import unescape
from typing import Any
from urllib.parse import quote, urljoin

import httpx
import psycopg
import pytest
from conftest import TEST_KEYS, cloned_database
from owslib.ogcapi.features import Features

from gis.security import keys

LAYER = "pipe_nodes"
POINT = (123.4312, 41.8034)
IDS = ["A/12", "A/history", "a/b/c", "100%", "%2F", "a%2Fb", "q?x=1", "hash#1", "with space", "阀门/东-7", "ä ö/ü",
       "/lead", "trail/", "a/../b", "..."]


@dataclass(frozen=True)
class Service:
    url: str
    editor: dict[str, str]
    admin: dict[str, str]
    http: httpx.Client


@pytest.fixture(scope="module")
def service(server_url: str, template_db: str,
            serve_api: Callable[[str], AbstractContextManager[str]]) -> Iterator[Service]:
    with cloned_database(server_url, template_db, "gis_test_feature_ids") as url:
        with psycopg.connect(url) as conn:
            token = keys.create_key(conn, "id editor", "pipeline_editor", "")[1]
            conn.commit()
        with serve_api(url) as base, httpx.Client(timeout=60) as http:
            yield Service(base, {"X-API-Key": token}, {"X-API-Key": TEST_KEYS["admin"]}, http)


def _node(fid: str, state: str = "open") -> dict[str, Any]:
    return {"type": "Feature", "id": fid, "geometry": {"type": "Point", "coordinates": list(POINT)},
            "properties": {"node_type": "valve", "utility": "water", "state": state, "ground_elev_m": 40.0}}


def _item_url(service: Service, fid: str) -> str:
    return f"{service.url}/collections/{LAYER}/items/{quote(fid, safe='')}"


@pytest.fixture(scope="module")
def created(service: Service) -> dict[str, str]:
    """fid -> the Location the service answered when it was created."""
    found = {}
    for fid in IDS:
        r = service.http.post(f"{service.url}/collections/{LAYER}/items", json=_node(fid), headers=service.editor)
        assert r.status_code == 201, (fid, r.text)
        found[fid] = r.headers["Location"]
    return found


def _get(service: Service, url: str) -> httpx.Response:
    # The URL exactly as written by the service: httpx must not re-encode it.
    return service.http.get(httpx.URL(url), headers=service.admin)


@pytest.mark.parametrize("fid", IDS)
def test_an_id_is_reachable_by_its_location_self_and_history_links(
        service: Service, created: dict[str, str], fid: str) -> None:
    assert created[fid] == _item_url(service, fid)
    feature = _get(service, created[fid])
    assert feature.status_code == 200, feature.text
    assert feature.json()["id"] == fid
    links = {link["rel"]: link["href"] for link in feature.json()["links"]}
    again = _get(service, links["self"])
    assert again.status_code == 200 and again.json()["id"] == fid
    history = _get(service, links["version-history"])
    assert history.status_code == 200 and [f["id"] for f in history.json()["features"]] == [fid]
    latest = {link["rel"]: link["href"] for link in history.json()["links"]}["latest-version"]
    assert _get(service, latest).json()["id"] == fid


def _hrefs(page: str, base: str) -> list[str]:
    return [urljoin(base, unescape(h)) for h in re.findall(r'href="([^"]+)"', page)]


@pytest.mark.parametrize("fid", IDS)
def test_html_pages_link_to_the_feature(service: Service, created: dict[str, str], fid: str) -> None:
    page_url = created[fid] + "?f=html"
    page = _get(service, page_url)
    assert page.status_code == 200
    own = [h for h in _hrefs(page.text, page_url) if h.startswith(created[fid])]
    assert own, "the feature's page links to itself and its history"
    for href in own:
        followed = _get(service, href)
        assert followed.status_code == 200, href
        assert fid in followed.text or unescape(followed.text).count(fid)


def test_the_items_page_links_to_each_feature(service: Service, created: dict[str, str]) -> None:
    x, y = POINT
    box = f"{x - 1e-5},{y - 1e-5},{x + 1e-5},{y + 1e-5}"
    page_url = f"{service.url}/collections/{LAYER}/items?f=html&limit=1000&bbox={box}"
    page = _get(service, page_url)
    assert page.status_code == 200
    linked = {h.split("?")[0] for h in _hrefs(page.text, page_url) if f"/collections/{LAYER}/items/" in h}
    assert set(created.values()) <= linked
    for href in linked:
        assert _get(service, href).status_code == 200, href


@pytest.mark.parametrize("fid", ["A/12", "100%", "with space", "阀门/东-7"])
def test_edits_reach_the_id(service: Service, created: dict[str, str], fid: str) -> None:
    url = httpx.URL(created[fid])
    tag = _get(service, created[fid]).headers["ETag"]
    patched = service.http.patch(url, json={"properties": {"state": "closed"}},
                                 headers={**service.editor, "If-Match": tag,
                                          "Content-Type": "application/merge-patch+json"})
    assert patched.status_code == 204, patched.text
    assert _get(service, created[fid]).json()["properties"]["state"] == "closed"
    replaced = service.http.put(url, json=_node(fid, "open"), headers={**service.editor,
                                                                       "If-Match": patched.headers["ETag"]})
    assert replaced.status_code == 204, replaced.text
    history = _get(service, created[fid] + "/history").json()
    assert [f["properties"]["state"] for f in history["features"]] == ["open", "closed", "open"]


def test_deleting_an_id_with_a_slash_deletes_only_it(service: Service, created: dict[str, str]) -> None:
    victim = "a/b/c"
    gone = service.http.delete(httpx.URL(created[victim]), headers=service.editor)
    assert gone.status_code == 204, gone.text
    assert _get(service, created[victim]).status_code == 404
    assert _get(service, created["A/12"]).status_code == 200


def test_owslib_reaches_an_id_with_a_slash(service: Service, created: dict[str, str]) -> None:
    """OWSLib puts the id into the path as it is (no encoding): a slash arrives as a slash."""
    client = Features(service.url, headers=service.admin)
    for fid in ("A/12", "阀门/东-7", "with space"):
        assert client.collection_item(LAYER, fid)["id"] == fid
