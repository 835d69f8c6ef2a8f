"""OGC API Features Part 4 through the real service: create, replace, patch and delete with history, ETags,
validation by the refresh's own rules, the access policy's edit grants, the change log and the audit.

The module serves its own clone of the template (edits change it) with keys of the editor roles made here.
"""

import json
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

import httpx
import psycopg
import pyproj
import pytest
from conftest import TEST_KEYS, cloned_database
from owslib.ogcapi.features import Features

from gis.security import keys

PART4 = "http://www.opengis.net/spec/ogcapi-features-4/1.0/conf/"
# A point well inside the city (CRS84) and one outside its extent.
INSIDE = (123.43, 41.80)
OUTSIDE = (120.0, 30.0)


@dataclass(frozen=True)
class Service:
    url: str
    db_url: str
    keys: dict[str, str]
    station: str  # the policing editor's jurisdiction
    http: httpx.Client

    def call(self, method: str, path: str, role: str | None, body: Any = None,
             headers: dict[str, str] | None = None) -> httpx.Response:
        sent = dict(headers or {})
        if role:
            sent["X-API-Key"] = self.keys[role]
        content = None if body is None else json.dumps(body)
        return self.http.request(method, self.url + path, content=content, headers=sent)


@pytest.fixture(scope="module")
def service(server_url: str, template_db: str,
            serve_api: Callable[[str], AbstractContextManager[str]]) -> Iterator[Service]:
    with cloned_database(server_url, template_db, "gis_test_edits") as url:
        made: dict[str, str] = {"admin": TEST_KEYS["admin"], "analyst": TEST_KEYS["analyst"]}
        with psycopg.connect(url) as conn:
            station = conn.execute("SELECT station FROM policing.police_jurisdictions ORDER BY fid LIMIT 1").fetchone()
            assert station is not None
            for role in ("pipeline_editor", "planning_editor", "base_editor"):
                made[role] = keys.create_key(conn, f"test {role}", role, "")[1]
            made["policing_editor"] = keys.create_key(conn, "officer", "policing_editor", "",
                                                      {"jurisdiction": station[0]})[1]
            conn.commit()
        with serve_api(url) as base, httpx.Client(timeout=60) as http:
            yield Service(base, url, made, str(station[0]), http)


def node(fid: str | None = None, lonlat: tuple[float, float] = INSIDE, **properties: Any) -> dict[str, Any]:
    feature: dict[str, Any] = {
        "type": "Feature", "geometry": {"type": "Point", "coordinates": list(lonlat)},
        "properties": {"node_type": "valve", "utility": "water", "state": "open", "ground_elev_m": 42.5,
                       **properties}}
    if fid is not None:
        feature["id"] = fid
    return feature


def query(service: Service, statement: str, *params: object) -> list[tuple[Any, ...]]:
    with psycopg.connect(service.db_url, autocommit=True) as conn:
        return conn.execute(statement, params).fetchall()  # type: ignore[arg-type]


def version(service: Service, layer: str) -> int:
    return int(query(service, "SELECT changed_refresh_id FROM ops.layer_stats WHERE layer_id = %s", layer)[0][0])


# -- the service declares and documents Part 4 --------------------------------------------------------------

def test_conformance_declares_part4(service: Service) -> None:
    classes = service.http.get(service.url + "/conformance").json()["conformsTo"]
    for name in ("create-replace-delete", "update", "optimistic-locking-etags"):
        assert PART4 + name in classes


def test_openapi_documents_the_bodies(service: Service) -> None:
    paths = service.http.get(service.url + "/openapi").json()["paths"]
    post = paths["/collections/{collectionId}/items"]["post"]
    assert post["requestBody"]["content"]["application/geo+json"]["schema"]["properties"]["type"]["enum"] == ["Feature"]
    item = paths["/collections/{collectionId}/items/{featureId}"]
    assert "application/merge-patch+json" in item["patch"]["requestBody"]["content"]
    assert "requestBody" in item["put"] and "delete" in item
    assert {p.get("name") for p in item["put"]["parameters"]} >= {"If-Match", "Content-Crs", "X-Edit-Reason"}


# -- create, update, delete with history ---------------------------------------------------------------------

def test_create_then_patch_keeps_both_versions_with_who_and_why(service: Service) -> None:
    before = version(service, "pipe_nodes")
    created = service.call("POST", "/collections/pipe_nodes/items", "pipeline_editor", node("V-EDIT-1"),
                           {"Content-Type": "application/geo+json", "X-Edit-Reason": "new%20valve%20%E9%98%80"})
    assert created.status_code == 201, created.text
    assert created.headers["Location"].endswith("/collections/pipe_nodes/items/V-EDIT-1")
    first_tag = created.headers["ETag"]
    read = service.call("GET", "/collections/pipe_nodes/items/V-EDIT-1", "admin")
    assert read.status_code == 200 and read.headers["ETag"] == first_tag
    assert read.json()["properties"]["state"] == "open"
    assert version(service, "pipe_nodes") > before

    patched = service.call("PATCH", "/collections/pipe_nodes/items/V-EDIT-1", "pipeline_editor",
                           {"properties": {"state": "closed"}},
                           {"Content-Type": "application/merge-patch+json", "If-Match": first_tag})
    assert patched.status_code == 204, patched.text
    assert patched.headers["ETag"] != first_tag
    now = service.call("GET", "/collections/pipe_nodes/items/V-EDIT-1", "admin").json()
    assert now["properties"]["state"] == "closed" and now["properties"]["ground_elev_m"] == 42.5
    history = service.call("GET", "/collections/pipe_nodes/items/V-EDIT-1/history", "admin").json()
    assert [f["properties"]["state"] for f in history["features"]] == ["open", "closed"]
    assert history["features"][0]["properties"]["valid_to"] == history["features"][1]["properties"]["valid_from"]

    log = query(service, "SELECT operation, role, reason FROM ops.edits WHERE layer_id = 'pipe_nodes' AND "
                         "fid = 'V-EDIT-1' ORDER BY edit_id")
    assert log == [("create", "pipeline_editor", "new valve 阀"), ("update", "pipeline_editor", None)]
    audited = query(service, "SELECT action, role, status FROM ops.audit_log WHERE layer_id = 'pipe_nodes' AND "
                             "query->>'fid' = 'V-EDIT-1' ORDER BY audit_id")
    assert audited == [("edit:create", "pipeline_editor", 200), ("edit:update", "pipeline_editor", 200)]


def test_stale_if_match_is_refused_and_changes_nothing(service: Service) -> None:
    tag = service.call("POST", "/collections/pipe_nodes/items", "pipeline_editor", node("V-EDIT-2")).headers["ETag"]
    assert service.call("PATCH", "/collections/pipe_nodes/items/V-EDIT-2", "pipeline_editor",
                        {"properties": {"state": "closed"}}, {"If-Match": tag}).status_code == 204
    stale = service.call("PUT", "/collections/pipe_nodes/items/V-EDIT-2", "pipeline_editor",
                         node("V-EDIT-2", state="open"), {"If-Match": tag})
    assert stale.status_code == 412
    assert service.call("GET", "/collections/pipe_nodes/items/V-EDIT-2", "admin").json()["properties"]["state"] \
        == "closed"


def test_a_write_without_if_match_is_accepted_unless_the_layer_requires_it(service: Service) -> None:
    assert service.call("PUT", "/collections/pipe_nodes/items/V-EDIT-2", "pipeline_editor",
                        node("V-EDIT-2", state="open")).status_code == 204
    fid = query(service, "SELECT i.fid FROM policing.incidents i JOIN policing.police_jurisdictions j "
                         "ON ST_Intersects(i.geom, j.geom) WHERE j.station = %s ORDER BY i.fid LIMIT 1",
                service.station)[0][0]
    required = service.call("PATCH", f"/collections/incidents/items/{fid}", "policing_editor",
                            {"properties": {"status": "closed"}})
    assert required.status_code == 428 and "If-Match" in required.json()["description"]


def count(service: Service, layer: str) -> int:
    return int(query(service, "SELECT row_count FROM ops.layer_stats WHERE layer_id = %s", layer)[0][0])


def test_delete_closes_the_feature_into_history(service: Service) -> None:
    before = count(service, "pipe_nodes")
    service.call("POST", "/collections/pipe_nodes/items", "pipeline_editor", node("V-EDIT-3"))
    assert count(service, "pipe_nodes") == before + 1
    assert service.call("DELETE", "/collections/pipe_nodes/items/V-EDIT-3", "pipeline_editor").status_code == 204
    assert count(service, "pipe_nodes") == before
    assert count(service, "pipe_nodes") == query(service, "SELECT count(*) FROM pipeline.pipe_nodes")[0][0]
    assert service.call("GET", "/collections/pipe_nodes/items/V-EDIT-3", "admin").status_code == 404
    history = service.call("GET", "/collections/pipe_nodes/items/V-EDIT-3/history", "admin").json()
    assert history["numberReturned"] == 1 and history["features"][0]["properties"]["valid_to"] is not None
    assert service.call("DELETE", "/collections/pipe_nodes/items/V-EDIT-3", "pipeline_editor").status_code == 404


def test_create_with_an_existing_id_is_a_conflict(service: Service) -> None:
    fid = query(service, "SELECT fid FROM pipeline.pipe_nodes ORDER BY fid LIMIT 1")[0][0]
    answer = service.call("POST", "/collections/pipe_nodes/items", "pipeline_editor", node(fid))
    assert answer.status_code == 409 and answer.json()["code"] == "Conflict"


def test_content_crs_gauss_kruger_input_is_stored_in_cgcs2000(service: Service) -> None:
    to_gk = pyproj.Transformer.from_crs("EPSG:4490", "EPSG:4550", always_xy=True)
    easting, northing = to_gk.transform(*INSIDE)
    feature = node("V-EDIT-GK")
    feature["geometry"]["coordinates"] = [northing, easting]  # EPSG:4550's axis order: northing, easting
    answer = service.call("POST", "/collections/pipe_nodes/items", "pipeline_editor", feature,
                          {"Content-Crs": "<http://www.opengis.net/def/crs/EPSG/0/4550>"})
    assert answer.status_code == 201, answer.text
    lon, lat = service.call("GET", "/collections/pipe_nodes/items/V-EDIT-GK", "admin").json()["geometry"]["coordinates"]
    assert lon == pytest.approx(INSIDE[0], abs=1e-6) and lat == pytest.approx(INSIDE[1], abs=1e-6)


# -- validation: the refresh's own rules, a 400 naming the member --------------------------------------------

@pytest.mark.parametrize(("feature", "parameter"), [
    (node("V-BAD-1", node_type="tap"), "properties.node_type"),
    (node("V-BAD-2", ground_elev_m="high"), "properties.ground_elev_m"),
    (node("V-BAD-3", utility=None), "properties.utility"),
    (node("V-BAD-4", colour="red"), "properties.colour"),
    (node("V-BAD-5", lonlat=OUTSIDE), "geometry"),
    ({**node("V-BAD-6"), "geometry": {"type": "LineString", "coordinates": [list(INSIDE), [123.44, 41.81]]}},
     "geometry"),
    ({**node("V-BAD-7"), "geometry": {"type": "Point", "coordinates": ["x"]}}, "geometry"),
    ({"type": "FeatureCollection", "features": []}, "type"),
])
def test_a_bad_body_is_a_400_naming_the_member(service: Service, feature: dict[str, Any], parameter: str) -> None:
    answer = service.call("POST", "/collections/pipe_nodes/items", "pipeline_editor", feature)
    assert answer.status_code == 400, answer.text
    assert answer.json()["parameter"] == parameter
    assert not query(service, "SELECT 1 FROM pipeline.pipe_nodes WHERE fid LIKE 'V-BAD-%%'")


def test_a_bad_content_crs_is_a_400(service: Service) -> None:
    answer = service.call("POST", "/collections/pipe_nodes/items", "pipeline_editor", node("V-BAD-CRS"),
                          {"Content-Crs": "<http://www.opengis.net/def/crs/EPSG/0/9999>"})
    assert answer.status_code == 400 and answer.json()["parameter"] == "Content-Crs"


# -- who may write -------------------------------------------------------------------------------------------

def test_anonymous_and_roles_without_the_grant_cannot_edit(service: Service) -> None:
    assert service.call("POST", "/collections/place_names/items", None, node()).status_code == 401
    assert service.call("POST", "/collections/pipe_nodes/items", "analyst", node("V-NO")).status_code == 403
    assert service.call("POST", "/collections/pipe_nodes/items", "admin", node("V-NO")).status_code == 403
    # a layer the role cannot see answers as one that does not exist
    assert service.call("POST", "/collections/incidents/items", "pipeline_editor", node("V-NO")).status_code == 404


def test_a_masked_field_cannot_be_written_and_is_kept_on_replace(service: Service) -> None:
    fid, applicant = query(service, "SELECT fid, applicant FROM planning.construction_projects "
                                    "WHERE applicant IS NOT NULL ORDER BY fid LIMIT 1")[0]
    seen = service.call("GET", f"/collections/construction_projects/items/{fid}", "planning_editor").json()
    assert "applicant" not in seen["properties"]
    refused = service.call("PATCH", f"/collections/construction_projects/items/{fid}", "planning_editor",
                           {"properties": {"applicant": "someone else"}})
    assert refused.status_code == 403 and "applicant" in refused.json()["description"]
    seen["properties"]["project_name"] = "改名的项目"
    assert service.call("PUT", f"/collections/construction_projects/items/{fid}", "planning_editor",
                        seen).status_code == 204
    assert query(service, "SELECT project_name, applicant FROM planning.construction_projects WHERE fid = %s",
                 fid) == [("改名的项目", applicant)]


def test_row_rules_hold_for_writes(service: Service) -> None:
    mine, elsewhere = (query(service, "SELECT i.fid FROM policing.incidents i WHERE " + test
                             + " ORDER BY i.fid LIMIT 1", service.station)[0][0] for test in (
        "ST_Intersects(i.geom, (SELECT ST_Union(geom) FROM policing.police_jurisdictions WHERE station = %s))",
        "NOT ST_Intersects(i.geom, (SELECT ST_Union(geom) FROM policing.police_jurisdictions WHERE station = %s))"))
    tag = service.call("GET", f"/collections/incidents/items/{mine}", "policing_editor").headers["ETag"]
    outside = service.call("PATCH", f"/collections/incidents/items/{elsewhere}", "policing_editor",
                           {"properties": {"status": "closed"}}, {"If-Match": "*"})
    assert outside.status_code == 404
    away = service.call("PATCH", f"/collections/incidents/items/{mine}", "policing_editor",
                        {"geometry": {"type": "Point", "coordinates": [123.9, 43.1]}}, {"If-Match": tag})
    assert away.status_code == 403, away.text
    assert service.call("DELETE", f"/collections/incidents/items/{mine}", "policing_editor",
                        headers={"If-Match": tag}).status_code == 403  # the role has no delete grant
    assert service.call("GET", f"/collections/incidents/items/{mine}", "policing_editor").headers["ETag"] == tag


# -- OWSLib's Part 4 client ----------------------------------------------------------------------------------

def test_owslib_creates_updates_and_deletes(service: Service) -> None:
    client = Features(service.url, headers={"X-API-Key": service.keys["base_editor"]})
    feature = {"type": "Feature", "id": "PN-OWSLIB", "geometry": {"type": "Point", "coordinates": list(INSIDE)},
               "properties": {"name": "巡检新地名", "category": "landmark"}}
    assert client.collection_item_create("place_names", json.dumps(feature))
    assert client.collection_item("place_names", "PN-OWSLIB")["properties"]["name"] == "巡检新地名"
    feature["properties"]["name"] = "改过的地名"
    assert client.collection_item_update("place_names", "PN-OWSLIB", json.dumps(feature))
    assert client.collection_item("place_names", "PN-OWSLIB")["properties"]["name"] == "改过的地名"
    assert client.collection_item_delete("place_names", "PN-OWSLIB")
    with pytest.raises(RuntimeError):
        client.collection_item("place_names", "PN-OWSLIB")
    history = service.call("GET", "/collections/place_names/items/PN-OWSLIB/history", None).json()
    assert [f["properties"]["name"] for f in history["features"]] == ["巡检新地名", "改过的地名"]
