"""Nothing leaks: the matrix role x layer x access path, answers that never depend on what the caller may not see
(non-interference: the hidden data is changed and every answer must stay the same), side channels (examples,
extents, jobs, errors, the cost of a 404) and the sensor gateways' refusals.

Everything is data-driven from the access policy and the registry: every role of the policy gets a key (with
the claims its row rules need), every layer is probed on every path, and a new layer, role, mask or row rule is
covered without touching this file. The module serves clones of its own: one it only reads, and one whose
hidden data it changes.
"""

import csv
import io
import json
import re
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

import httpx
import mapbox_vector_tile
import psycopg
import pytest
import yaml
from conftest import ROOT, cloned_database
from map_styles import source_of
from psycopg import sql

from gis import identifiers as ids
from gis.analysis import overlap
from gis.analysis.rules import Rule, load_rules
from gis.errors import ConfigError, NotFound
from gis.features import crs as crs_
from gis.features import queries
from gis.layers import LayerRegistry
from gis.refresh.record import recompute_stats
from gis.security import keys, rows
from gis.security.examples import EXAMPLE_PIPE, EXAMPLE_PROJECT, EXAMPLE_SENSOR
from gis.security.policy import Policy, Role, build_policy, load_policy, policy_path, readable
from gis.settings import Settings

NOSUCH = "nosuch_layer_x"
# The roles, read from the policy file when the tests are collected, so a new role is probed without an edit here.
_POLICY = yaml.safe_load((ROOT / "layers" / "access-policy.yml").read_text(encoding="utf-8"))
ROLES = ["", *_POLICY["roles"]]  # "": anonymous
PARTLY_HIDDEN = [name for name, role in _POLICY["roles"].items() if role.get("mask") or role.get("rows")]
TMS = "WebMercatorQuad"
VOLATILE = frozenset({"checked_at", "computed_at", "timeStamp"})


@dataclass(frozen=True)
class Service:
    url: str
    db_url: str
    headers: dict[str, dict[str, str]]  # role -> headers ("" is anonymous)
    http: httpx.Client

    def get(self, path: str, role: str, **params: Any) -> httpx.Response:
        return self.http.get(self.url + path, headers=self.headers[role], params=params)

    def execute(self, process: str, inputs: dict[str, Any], role: str, prefer: str | None = None) -> httpx.Response:
        headers = {**self.headers[role], **({"Prefer": prefer} if prefer else {})}
        return self.http.post(f"{self.url}/processes/{process}/execution", json={"inputs": inputs}, headers=headers)


@pytest.fixture(scope="module")
def policy(registry: LayerRegistry, settings: Settings) -> Policy:
    return load_policy(policy_path(settings.layers_dir), registry)


def role_of(policy: Policy, name: str) -> Role:
    found = policy.anonymous if name == "" else policy.role(name)
    assert found is not None
    return found


def _claims(conn: psycopg.Connection, registry: LayerRegistry, role: Role) -> dict[str, str]:
    """A claim value for each row rule of the role: the first value of the field the rule compares it with."""
    claims = {}
    for layer_id, rule in role.spec.rows.items():
        spec, name = ((registry[rule.within.layer], rule.within.field) if rule.within is not None
                      else (registry[layer_id], rule.field))
        assert name is not None
        row = conn.execute(sql.SQL("SELECT {} FROM {} WHERE {} IS NOT NULL ORDER BY fid LIMIT 1").format(
            ids.column(spec, name), ids.current_table(spec), ids.column(spec, name))).fetchone()
        assert row is not None, (layer_id, name)
        claims[rule.claim] = str(row[0])
    return claims


def _keys(url: str, registry: LayerRegistry, policy: Policy) -> dict[str, dict[str, str]]:
    headers: dict[str, dict[str, str]] = {"": {}}
    with psycopg.connect(url) as conn:
        for name, role in policy.roles.items():
            _record, token = keys.create_key(conn, f"leak test {name}", name, "", _claims(conn, registry, role))
            headers[name] = {"X-API-Key": token}
        conn.commit()
    return headers


@pytest.fixture(scope="module")
def service(server_url: str, template_db: str, registry: LayerRegistry, policy: Policy,
            serve_api: Callable[[str], AbstractContextManager[str]]) -> Iterator[Service]:
    with cloned_database(server_url, template_db, "gis_test_leaks") as url:
        headers = _keys(url, registry, policy)
        with serve_api(url) as base, httpx.Client(timeout=120) as http:
            yield Service(base, url, headers, http)


@pytest.fixture(scope="module")
def samples(service: Service, registry: LayerRegistry) -> dict[str, str]:
    """layer -> the id of one of its features."""
    found = {}
    with psycopg.connect(service.db_url) as conn:
        for spec in registry.values():
            row = conn.execute(sql.SQL("SELECT fid FROM {} ORDER BY fid LIMIT 1").format(
                ids.current_table(spec))).fetchone()
            assert row is not None, spec.id
            found[spec.id] = str(row[0])
    return found


# -- the matrix: role x layer x access path -------------------------------------------------------------------

def layer_paths(layer_id: str, fid: str) -> dict[str, tuple[str, dict[str, str]]]:
    base = f"/collections/{layer_id}"
    return {
        "collection": (base, {}), "collection-html": (base, {"f": "html"}),
        "items": (f"{base}/items", {"limit": "5"}), "items-html": (f"{base}/items", {"limit": "5", "f": "html"}),
        "item": (f"{base}/items/{fid}", {}), "item-html": (f"{base}/items/{fid}", {"f": "html"}),
        "history": (f"{base}/items/{fid}/history", {}), "queryables": (f"{base}/queryables", {}),
        "tilesets": (f"{base}/tiles", {}), "tileset": (f"{base}/tiles/{TMS}", {}),
        "tilejson": (f"{base}/tiles/{TMS}/tilejson.json", {}), "tile": (f"{base}/tiles/{TMS}/0/0/0", {}),
        "download": (f"{base}/download", {"f": "csv", "bbox": "123.40,41.76,123.42,41.78"}),
        "catalog": (f"/catalog/items/{layer_id}", {}),
    }


def json_keys(value: Any) -> set[str]:
    if isinstance(value, dict):
        return set(value) | {k for v in value.values() for k in json_keys(v)}
    if isinstance(value, list):
        return {k for v in value for k in json_keys(v)}
    return set()


def shown_names(path: str, response: httpx.Response) -> set[str]:
    """Every field name an answer shows: JSON keys, a CSV header, HTML table headers, tile properties."""
    if response.status_code == 204 or not response.content:
        return set()
    if path == "tile":
        return {k for layer in mapbox_vector_tile.decode(response.content).values()
                for f in layer["features"] for k in f["properties"]}
    if path == "download":
        return set(next(csv.reader(io.StringIO(response.text))))
    if path.endswith("html"):
        return set(re.findall(r"<th>([^<]*)</th>", response.text))
    return json_keys(response.json())


def no_server_paths(text: str, settings: Settings) -> bool:
    return str(ROOT) not in text and str(settings.layers_dir) not in text and "/tmp/" not in text


@pytest.mark.parametrize("role_name", ROLES)
def test_matrix_role_layer_path(service: Service, policy: Policy, registry: LayerRegistry, settings: Settings,
                                samples: dict[str, str], role_name: str) -> None:
    """Hidden layers answer exactly as missing ones; visible ones never show a masked field; a row-limited
    caller sees none of the whole layer's facts (count, extents, change time); no answer shows a server path."""
    role = role_of(policy, role_name)
    for spec in registry.values():
        view = role.views.get(spec.id)
        fid = samples[spec.id]
        missing = layer_paths(NOSUCH, fid)
        for path, (url, params) in layer_paths(spec.id, fid).items():
            where = f"{role_name or 'anonymous'} {spec.id} {path}"
            r = service.get(url, role_name, **params)
            assert r.status_code < 500, (where, r.text[:300])
            assert no_server_paths(r.text if "html" in path or r.headers.get("content-type", "").startswith(
                ("application/json", "application/geo+json", "text")) else "", settings), where
            if view is None:
                other = service.get(missing[path][0], role_name, **missing[path][1])
                assert r.status_code == other.status_code == 404, where
                assert r.text.replace(spec.id, "X") == other.text.replace(NOSUCH, "X"), where
                continue
            if view.rows is not None and path in ("item", "item-html", "history") and r.status_code == 404:
                continue  # the sample feature lies outside the caller's rows
            assert r.status_code in (200, 204), (where, r.status_code, r.text[:300])
            leaked = shown_names(path, r) & set(view.masked)
            assert not leaked, (where, leaked)
            if view.rows is None:
                continue
            body = r.json() if path in ("collection", "tileset", "tilejson", "catalog") else None
            if path == "collection":
                assert body["extent"] == {} and not {"numberOfFeatures", "changedAt"} & set(body), where
            elif path == "tileset":
                city = list(settings.city_extent)
                assert body["boundingBox"]["lowerLeft"] + body["boundingBox"]["upperRight"] == city, where
            elif path == "tilejson":
                assert body["bounds"] == list(settings.city_extent), where
            elif path == "catalog":
                assert body["geometry"] is None and body["time"] is None, where
                assert not {"updated", "numberOfFeatures"} & set(body["properties"]), where
    style = service.get("/map/style.json", role_name).json()
    for layer_id, view in role.views.items():
        source = source_of(style, layer_id)
        if view.rows is not None and source is not None:
            assert "bounds" not in source, (role_name, layer_id)
    visible = set(role.views) | {r for r, s in registry.rasters.items() if readable(role.spec, s)}
    hidden = (set(registry) | set(registry.rasters)) - visible
    document = service.get("/openapi", role_name, f="json").text
    assert not {layer_id for layer_id in hidden if f'"{layer_id}"' in document}, role_name
    for raster_id in registry.rasters:
        if raster_id in hidden:
            r = service.get(f"/collections/{raster_id}/coverage", role_name)
            other = service.get(f"/collections/{NOSUCH}/coverage", role_name)
            assert r.status_code == other.status_code == 404
            assert r.text.replace(raster_id, "X") == other.text.replace(NOSUCH, "X"), (role_name, raster_id)


def _process_examples(service: Service) -> dict[str, dict[str, Any]]:
    listed = service.get("/processes", "admin").json()["processes"]
    found = {}
    for p in listed:
        described = service.get(f"/processes/{p['id']}", "admin").json()
        found[p["id"]] = dict((described.get("example") or {}).get("inputs") or {})
    return found


@pytest.mark.parametrize("role_name", ROLES)
def test_process_refusals_name_no_hidden_layer(service: Service, policy: Policy, registry: LayerRegistry,
                                               settings: Settings, role_name: str) -> None:
    """Every process, run with its own example as a role: a refusal never names a layer the role may not read,
    nor a server path."""
    role = role_of(policy, role_name)
    visible = set(role.views) | {r for r, s in registry.rasters.items() if readable(role.spec, s)}
    hidden = (set(registry) | set(registry.rasters)) - visible
    for process, inputs in _process_examples(service).items():
        if process == "plan-conflicts":
            inputs = {**inputs, "patches": False}
        r = service.execute(process, inputs, role_name)
        assert r.status_code < 500, (process, r.text[:300])
        assert no_server_paths(r.text, settings), (process, r.text[:300])
        if r.status_code >= 400:
            named = {h for h in hidden if re.search(rf"\b{re.escape(h)}\b", r.text)}
            assert not named, (role_name, process, r.text[:300])


# -- side channels --------------------------------------------------------------------------------------------

def _strings(value: Any) -> set[str]:
    if isinstance(value, dict):
        return {s for v in value.values() for s in _strings(v)}
    if isinstance(value, list):
        return {s for v in value for s in _strings(v)}
    return {value} if isinstance(value, str) else set()


def test_examples_use_made_up_ids(service: Service, registry: LayerRegistry) -> None:
    """No string in the OpenAPI document or a process description (as any role sees them) is the id of a
    feature of a non-public layer."""
    shown: set[str] = set()
    for role_name in ("", "admin"):
        shown |= _strings(service.get("/openapi", role_name, f="json").json())
        for p in service.get("/processes", role_name).json()["processes"]:
            shown |= _strings(service.get(f"/processes/{p['id']}", role_name).json())
    with psycopg.connect(service.db_url) as conn:
        for spec in registry.values():
            if spec.access.value == "public":
                continue
            real = conn.execute(sql.SQL("SELECT fid FROM {} WHERE fid = ANY(%s) UNION SELECT fid FROM {} "
                                        "WHERE fid = ANY(%s)").format(ids.current_table(spec), ids.history_table(spec)),
                                (sorted(shown), sorted(shown))).fetchall()
            assert real == [], (spec.id, real)
    assert {EXAMPLE_PIPE, EXAMPLE_PROJECT, EXAMPLE_SENSOR} <= shown


def test_reports_and_errors_show_no_server_paths(service: Service, settings: Settings) -> None:
    box = {"type": "Polygon", "coordinates": [[[123.40, 41.75], [123.402, 41.75], [123.402, 41.752],
                                               [123.40, 41.752], [123.40, 41.75]]]}
    report = service.http.post(service.url + "/api/planning/overlap-checks", headers=service.headers["planner"],
                               json={"geometry": box}).json()
    assert report["rules_file"] == "overlap-rules.yml"
    rules = service.get("/api/planning/overlap-rules", "planner").json()
    assert rules["file"] == "overlap-rules.yml"
    burst = service.execute("police-nearest", {"point": [123.42, 41.76]}, "").json()
    assert burst["rules_file"] == "policing-rules.yml"
    broken = service.http.post(  # a truncated GeoPackage: GDAL's message quotes the temporary file it opened
        service.url + "/api/planning/overlap-checks", headers=service.headers["planner"],
        files={"file": ("plan.gpkg", b"SQLite format 3\x00" + b"\x00" * 200, "application/geopackage+sqlite3")})
    assert 400 <= broken.status_code < 500 and no_server_paths(broken.text, settings), broken.text


def test_an_overlap_report_names_no_layer_the_caller_may_not_read(service: Service, policy: Policy) -> None:
    box = {"type": "Polygon", "coordinates": [[[123.40, 41.75], [123.402, 41.75], [123.402, 41.752],
                                               [123.40, 41.752], [123.40, 41.75]]]}
    for role_name in ROLES:
        role = role_of(policy, role_name)
        r = service.http.post(service.url + "/api/planning/overlap-checks", headers=service.headers[role_name],
                              json={"geometry": box, "proposed_use": "R"})
        assert r.status_code == 200, (role_name, r.text[:300])
        for rule in r.json()["rules"]:
            readable_layer = rule["layer"] in role.views
            assert rule["layer"] is None or readable_layer, (role_name, rule["id"], rule["layer"])
            if rule["layer"] is None:
                assert rule["status"] == "not_evaluated" and rule["features"] == [], (role_name, rule["id"])


def test_anonymous_callers_do_not_share_jobs(service: Service) -> None:
    """An anonymous job is reached by its id only (a random uuid4): anonymous listings show no job, and no
    other caller lists, reads or deletes it; the anonymous caller holding the id does."""
    started = service.execute("police-nearest", {"point": [123.42, 41.76], "count": 1}, "", prefer="respond-async")
    assert started.status_code == 201, started.text
    job_id = started.headers["Location"].rstrip("/").rsplit("/", 1)[-1]
    assert uuid.UUID(job_id).version == 4
    assert service.get("/jobs", "").json()["jobs"] == []
    for other in ("analyst", "planner"):
        assert job_id not in {j["jobID"] for j in service.get("/jobs", other, limit=1000).json()["jobs"]}
        assert service.get(f"/jobs/{job_id}", other).status_code == 404
        assert service.get(f"/jobs/{job_id}/results", other).status_code == 404
        assert service.http.delete(f"{service.url}/jobs/{job_id}", headers=service.headers[other]).status_code == 404
    assert service.get(f"/jobs/{job_id}", "").status_code == 200
    assert job_id in {j["jobID"] for j in service.get("/jobs", "admin", limit=1000).json()["jobs"]}
    mine = service.execute("police-nearest", {"point": [123.42, 41.76], "count": 1}, "analyst",
                           prefer="respond-async")
    own_id = mine.headers["Location"].rstrip("/").rsplit("/", 1)[-1]
    listed = {j["jobID"] for j in service.get("/jobs", "analyst", limit=1000).json()["jobs"]}
    assert own_id in listed and job_id not in listed
    assert service.get(f"/jobs/{own_id}", "").status_code == 404
    assert service.http.delete(f"{service.url}/jobs/{job_id}").status_code == 200


def test_a_404_outside_the_rows_takes_the_missing_ones_query(service: Service, registry: LayerRegistry,
                                                             policy: Policy) -> None:
    """For every row rule of the policy: a feature outside the caller's rows and one that does not exist are
    looked up by the same statement (text and plan), and answered alike."""
    checked = 0
    with psycopg.connect(service.db_url) as conn:
        for name, role in policy.roles.items():
            claims = _claims(conn, registry, role)
            for layer_id, rule in role.spec.rows.items():
                view = role.views[layer_id]
                value = rows.claim_value(claims, rule)
                node = (rows.attribute_node(rule, value) if rule.within is None else
                        _spatial_node(service.db_url, rule, registry, value))
                page = service.get(f"/collections/{layer_id}/items", name, limit=10000,
                                   properties="", skipGeometry="true").json()
                inside = {f["id"] for f in page["features"]}
                outside = conn.execute(sql.SQL("SELECT fid FROM {} WHERE NOT (fid = ANY(%s)) ORDER BY fid LIMIT 1")
                                       .format(ids.current_table(view.spec)), (sorted(inside),)).fetchone()
                assert outside is not None, (name, layer_id)
                for build in (queries.item_statement, queries.history_statement):
                    a = build(view.spec, outside[0], crs_.CRS84, rows=node)  # type: ignore[operator]
                    b = build(view.spec, "no-such-feature", crs_.CRS84, rows=node)  # type: ignore[operator]
                    assert _text(conn, a.query) == _text(conn, b.query)
                    assert {k: v for k, v in a.params.items() if k != "fid"} == \
                           {k: v for k, v in b.params.items() if k != "fid"}
                    assert _plan(conn, a) == _plan(conn, b), (name, layer_id, build.__name__)
                for suffix in ("", "/history"):
                    there = service.get(f"/collections/{layer_id}/items/{outside[0]}{suffix}", name)
                    nothing = service.get(f"/collections/{layer_id}/items/no-such-feature{suffix}", name)
                    assert there.status_code == nothing.status_code == 404
                    assert there.text.replace(outside[0], "X") == nothing.text.replace("no-such-feature", "X")
                checked += 1
    assert checked >= 1, "the policy has no row rule to check"


def _spatial_node(url: str, rule: Any, registry: LayerRegistry, value: str | None) -> Any:
    import asyncio

    async def build() -> Any:
        async with await psycopg.AsyncConnection.connect(url) as conn:
            return await rows.spatial_node(conn, rule, registry, value, crs_.CRS84)

    return asyncio.run(build())


def _text(conn: psycopg.Connection, query: Any) -> bytes:
    return query if isinstance(query, bytes) else query.as_bytes(conn)


def _plan(conn: psycopg.Connection, statement: queries.Statement) -> Any:
    """The plan's shape: node types and relations, without costs or the values."""
    query = _text(conn, statement.query)
    row = conn.execute(b"EXPLAIN (FORMAT JSON, COSTS OFF) " + query, statement.params).fetchone()
    assert row is not None

    def shape(node: dict[str, Any]) -> Any:
        return (node.get("Node Type"), node.get("Relation Name"), node.get("Index Name"),
                tuple(shape(n) for n in node.get("Plans", [])))

    return shape(row[0][0]["Plan"])


# -- the sensor gateways --------------------------------------------------------------------------------------

def test_a_sensor_gateway_learns_nothing_of_the_sensors(service: Service, registry: LayerRegistry) -> None:
    """A writer that may not read pipe_sensors gets the same answer for a reading of an unknown sensor, of a
    known one out of its type's range, and a good one; the operators find the dropped ones in the refresh log."""
    with psycopg.connect(service.db_url) as conn:
        sensor, kind = conn.execute("SELECT fid, sensor_type FROM pipeline.pipe_sensors WHERE sensor_type = "
                                    "'pressure' ORDER BY fid LIMIT 1").fetchone()  # type: ignore[misc]
    url = service.url + "/api/pipeline/sensor-readings"

    def post(sensor_id: str, value: float, minutes: int) -> httpx.Response:
        reading = {"sensor": sensor_id, "observed_at": f"2026-01-01T08:{minutes:02d}:00+08:00", "value": value}
        return service.http.post(url, json={"readings": [reading]}, headers=service.headers["sensor_writer"])

    good, unknown, impossible = post(sensor, 0.3, 1), post("SN-NO-SUCH-SENSOR", 0.3, 2), post(sensor, 9999.0, 3)
    assert good.status_code == unknown.status_code == impossible.status_code == 200
    assert good.json() == unknown.json() == impossible.json() == {"layer": "sensor_readings", "received": 1,
                                                                  "duplicates_in_batch": 0}
    assert kind not in impossible.text
    with psycopg.connect(service.db_url) as conn:
        stored = conn.execute("SELECT fid FROM pipeline.sensor_readings WHERE fid = ANY(%s)", ([
            f"{s}@20260101T00{m:02d}00Z" for s, m in ((sensor, 1), ("SN-NO-SUCH-SENSOR", 2), (sensor, 3))],)).fetchall()
        rejected = conn.execute("SELECT rejected FROM ops.refresh_log WHERE layer_id = 'sensor_readings' "
                                "ORDER BY refresh_id DESC LIMIT 3").fetchall()
    assert len(stored) == 1 and sorted(r[0] for r in rejected) == [0, 1, 1]
    bad_unit = service.http.post(url, headers=service.headers["sensor_writer"], json={"readings": [
        {"sensor": sensor, "observed_at": "2026-01-01T09:00:00+08:00", "value": 0.3, "unit": "furlongs"}]})
    assert bad_unit.status_code == 400 and bad_unit.json()["errors"][0]["parameter"] == "readings[0].unit"
    detailed = service.http.post(url, headers=service.headers["pipeline_app"], json={"readings": [
        {"sensor": "SN-NO-SUCH-SENSOR", "observed_at": "2026-01-01T09:00:00+08:00", "value": 0.3}]})
    assert detailed.status_code == 400 and "SN-NO-SUCH-SENSOR" in detailed.text  # it may read the sensors


# -- the policy's `derive` ------------------------------------------------------------------------------------

def test_corridor_widths_without_the_pressure_class(registry: LayerRegistry, settings: Settings) -> None:
    rules = load_rules(settings.layers_dir / "overlap-rules.yml", registry)
    rule = rules.rule("pipeline_corridors")
    assert rule is not None and rule.widths
    blind = dict(overlap._width_entries(rule, frozenset({rule.pressure_field})))
    raw = yaml.safe_load((settings.layers_dir / "overlap-rules.yml").read_text(encoding="utf-8"))
    widths = next(r for r in raw["rules"] if r["id"] == "pipeline_corridors")["widths"]
    for utility in {w["utility"] for w in widths}:
        assert blind[utility] == max(w["width_m"] for w in widths if w["utility"] == utility)
    assert overlap._width_entries(rule, frozenset({rule.utility_field, rule.pressure_field})) == [
        (None, max(w["width_m"] for w in widths))]
    shadowed = Rule.model_validate({**rule.model_dump(), "widths": [
        {"utility": "gas", "width_m": 3.0}, {"utility": "gas", "pressure_class": "subhigh_a", "width_m": 15.0}]})
    assert overlap._width_entries(shadowed, frozenset({rule.pressure_field})) == [("gas", 3.0)]  # never reached


def test_a_derive_entry_must_name_a_dependency(registry: LayerRegistry, settings: Settings) -> None:
    from services.processes import check_derive

    raw = yaml.safe_load((settings.layers_dir / "access-policy.yml").read_text(encoding="utf-8"))
    rules = load_rules(settings.layers_dir / "overlap-rules.yml", registry)
    check_derive(build_policy(raw, registry), rules)
    raw["roles"]["planner"]["derive"] = {"overlap-check/no_such_rule": "visible"}
    with pytest.raises(ConfigError, match="no dependency 'overlap-check/no_such_rule'"):
        check_derive(build_policy(raw, registry), rules)
    raw["roles"]["planner"]["derive"] = {"overlap-check/basic_farmland": "visible"}
    with pytest.raises(ConfigError, match="'visible' is not supported"):
        check_derive(build_policy(raw, registry), rules)


# -- non-interference: change what a role may not see, and nothing it gets may change -------------------------

def stable(value: Any) -> Any:
    """An answer without the instants it was computed at."""
    if isinstance(value, dict):
        return {k: stable(v) for k, v in value.items() if k not in VOLATILE}
    if isinstance(value, list):
        return [stable(v) for v in value]
    return value


@pytest.fixture  # a clone per role: what one role's test changes is what another may see
def mutable(server_url: str, template_db: str, registry: LayerRegistry, policy: Policy,
            serve_api: Callable[[str], AbstractContextManager[str]]) -> Iterator[Service]:
    with cloned_database(server_url, template_db, "gis_test_leaks_changed") as url:
        headers = _keys(url, registry, policy)
        with serve_api(url) as base, httpx.Client(timeout=300) as http:
            yield Service(base, url, headers, http)


def _probe_inputs(service: Service) -> dict[str, dict[str, Any]]:
    """Inputs that reach the hidden data: the examples, and an overlap check across a gas pipe of the highest
    pressure class (its corridor is the widest)."""
    found = _process_examples(service)
    with psycopg.connect(service.db_url) as conn:
        row = conn.execute("SELECT ST_X(p), ST_Y(p) FROM (SELECT ST_ClosestPoint(geom, ST_Centroid(geom)) p FROM "
                           "pipeline.pipelines WHERE utility = 'gas' AND pressure_class = 'subhigh_a' AND status = "
                           "'in_service' ORDER BY fid LIMIT 1) s").fetchone()
    assert row is not None, "the sample has no sub-high pressure gas pipe"
    x, y = row
    ring = [[x - 0.0015, y - 0.0012], [x + 0.0015, y - 0.0012], [x + 0.0015, y + 0.0012], [x - 0.0015, y + 0.0012],
            [x - 0.0015, y - 0.0012]]
    found["overlap-check"] = {"geometry": {"type": "Polygon", "coordinates": [ring]}, "proposed_use": "R"}
    found.pop("plan-conflicts", None)  # reads only whole layers (refused otherwise); slow
    return found


def _capture(service: Service, role_name: str, role: Role, probes: dict[str, dict[str, Any]],
             outside: dict[str, str]) -> dict[str, Any]:
    answers: dict[str, Any] = {}
    for layer_id, view in role.views.items():
        if not (view.masked or view.rows):
            continue
        for path, (url, params) in layer_paths(layer_id, outside.get(layer_id, "no-such-feature")).items():
            r = service.get(url, role_name, **params)
            if path == "tile":
                answers[f"{layer_id} {path}"] = (r.status_code, r.content)
            elif path in ("collection", "items", "tileset", "tilejson", "catalog", "queryables", "item", "history"):
                answers[f"{layer_id} {path}"] = (r.status_code, stable(r.json()))
        answers[f"{layer_id} style"] = source_of(service.get("/map/style.json", role_name).json(), layer_id)
    for process, inputs in probes.items():
        r = service.execute(process, {**inputs, "format": "json"} if "format" not in inputs else inputs, role_name)
        try:
            answers[f"process {process}"] = (r.status_code, stable(r.json()))
        except ValueError:
            answers[f"process {process}"] = (r.status_code, r.text)
    return answers


def _rotate(conn: psycopg.Connection, registry: LayerRegistry, layer_id: str, names: tuple[str, ...]) -> None:
    """Every masked field of every row gets another value (the next coded value; text and numbers changed)."""
    spec = registry[layer_id]
    for name in names:
        field = spec.field(name)
        assert field is not None
        column = ids.column(spec, name)
        if field.values:
            cases = sql.SQL(" ").join(sql.SQL("WHEN {} THEN {}").format(sql.Literal(v), sql.Literal(
                field.values[(i + 1) % len(field.values)])) for i, v in enumerate(field.values))
            value: sql.Composable = sql.SQL("CASE {} {} END").format(column, cases)
        elif field.type.value in ("integer", "bigint", "real"):
            value = sql.SQL("{} + 1").format(column)
        else:
            value = sql.SQL("{} || '-changed'").format(column)
        conn.execute(sql.SQL("UPDATE {} SET {} = {}").format(ids.current_table(spec), column, value))


def _outside_rows(service: Service, role_name: str, role: Role, registry: LayerRegistry) -> dict[str, list[str]]:
    found = {}
    with psycopg.connect(service.db_url) as conn:
        for layer_id, view in role.views.items():
            if view.rows is None:
                continue
            page = service.get(f"/collections/{layer_id}/items", role_name, limit=10000).json()
            inside = sorted(f["id"] for f in page["features"])
            found[layer_id] = [r[0] for r in conn.execute(sql.SQL("SELECT fid FROM {} WHERE NOT (fid = ANY(%s)) "
                                                                  "ORDER BY fid").format(
                ids.current_table(registry[layer_id])), (inside,)).fetchall()]
            assert found[layer_id], (role_name, layer_id, "no row outside the caller's to change")
    return found


@pytest.mark.parametrize("role_name", PARTLY_HIDDEN)
def test_answers_do_not_depend_on_what_the_role_may_not_see(mutable: Service, policy: Policy,
                                                            registry: LayerRegistry, role_name: str) -> None:
    """Every answer of a role whose view of some layer is partial (masked fields, row rules): its documents,
    pages, tiles, extents and every process; then the masked fields of every row and the rows outside its
    own are changed (deleted, with the layer's counts and extents recomputed as a refresh does), and every
    answer must be the same."""
    role = role_of(policy, role_name)
    probes = _probe_inputs(mutable)
    outside = _outside_rows(mutable, role_name, role, registry)
    before = _capture(mutable, role_name, role, probes, {k: v[0] for k, v in outside.items()})
    with psycopg.connect(mutable.db_url) as conn:
        for layer_id, names in role.spec.mask.items():
            _rotate(conn, registry, layer_id, names)
        for layer_id, fids in outside.items():
            spec = registry[layer_id]
            conn.execute(sql.SQL("DELETE FROM {} WHERE fid = ANY(%s)").format(ids.current_table(spec)), (fids,))
            last = conn.execute("SELECT last_refresh_id FROM ops.layer_stats WHERE layer_id = %s",
                                (layer_id,)).fetchone()
            assert last is not None
            recompute_stats(conn, spec, int(last[0]))
        conn.commit()
    after = _capture(mutable, role_name, role, probes, {k: v[0] for k, v in outside.items()})
    assert before.keys() == after.keys()
    changed = sorted(k for k in before if before[k] != after[k])
    assert not changed, changed
    assert before["process overlap-check"][0] == 200


# -- edits (OGC API Features Part 4) under a row rule ---------------------------------------------------------

class _Recording(psycopg.Connection):
    """A real connection that keeps the text of every statement it runs (values travel apart, as parameters)."""

    statements: list[bytes]

    def execute(self, query: Any, params: Any = None, **kwargs: Any) -> Any:  # type: ignore[override]
        self.statements.append(query if isinstance(query, bytes) else
                               query.encode() if isinstance(query, str) else query.as_bytes(self))
        return super().execute(query, params, **kwargs)


def _edit_cases(policy: Policy) -> list[tuple[str, str, tuple[str, ...]]]:
    """(role, layer, operations) for every edit grant on a layer the role sees only some rows of."""
    return [(name, layer_id, tuple(ops)) for name, role in policy.roles.items()
            for layer_id, ops in role.spec.edits.items() if role.views[layer_id].rows is not None]


def test_an_editor_under_a_row_rule_learns_nothing_of_the_other_rows(service: Service, policy: Policy,
                                                                     registry: LayerRegistry,
                                                                     settings: Settings) -> None:
    """Creating with the id of a feature outside the editor's rows answers as with an id nobody has; changing
    one answers as one that does not exist, by the same statements."""
    from gis.edits.store import Editor, EditRequest, Operation, apply_edit

    cases = _edit_cases(policy)
    assert cases, "the policy grants no edit under a row rule"
    for name, layer_id, operations in cases:
        role = role_of(policy, name)
        view = role.views[layer_id]
        page = service.get(f"/collections/{layer_id}/items", name, limit=10000, skipGeometry="true").json()
        with psycopg.connect(service.db_url) as conn:
            claims = _claims(conn, registry, role)
            outside = conn.execute(sql.SQL("SELECT fid FROM {} WHERE NOT (fid = ANY(%s)) ORDER BY fid LIMIT 1").format(
                ids.current_table(registry[layer_id])), (sorted(f["id"] for f in page["features"]),)).fetchone()
        assert outside is not None, (name, layer_id)
        fid, nobody = str(outside[0]), "no-such-feature"
        url = f"{service.url}/collections/{layer_id}/items"
        headers = {**service.headers[name], "Content-Type": "application/geo+json", "If-Match": "*"}
        if "create" in operations:
            answers = [service.http.post(url, headers=headers, content=json.dumps(
                {"type": "Feature", "id": i, "geometry": None, "properties": {}})) for i in (fid, nobody)]
            assert answers[0].status_code == answers[1].status_code == 400, (name, answers[0].text)
            assert answers[0].text.replace(fid, "X") == answers[1].text.replace(nobody, "X")
        if "update" in operations:
            answers = [service.http.patch(f"{url}/{i}", headers=headers, content=json.dumps({"properties": {}}))
                       for i in (fid, nobody)]
            assert answers[0].status_code == answers[1].status_code == 404, (name, answers[0].text)
            assert answers[0].text.replace(fid, "X") == answers[1].text.replace(nobody, "X")
            editor = Editor(f"test:{name}", name, "api-key", None, claims, view.rows, view.masked)
            runs = []
            for i in (fid, nobody):
                with _Recording.connect(service.db_url) as conn:
                    conn.statements = []
                    with pytest.raises(NotFound):
                        apply_edit(conn, registry, settings.city_extent, EditRequest(
                            registry[layer_id], Operation.update, editor, fid=i, body={"properties": {}},
                            if_match="*"))
                    runs.append(conn.statements)
            assert runs[0] == runs[1], (name, layer_id)


def test_a_broken_delivery_is_reported_without_server_paths(service: Service, policy: Policy,
                                                            settings: Settings) -> None:
    """A department's truncated GeoPackage: the refusal, or the delivery record and its job, name no file of
    the server (GDAL quotes the path it opened)."""
    import time

    department = next(name for name, role in policy.roles.items() if "pipe_nodes" in role.spec.deliveries)
    broken = b"SQLite format 3\x00" + b"\x00" * 4000
    r = service.http.post(f"{service.url}/api/deliveries/pipe_nodes", headers=service.headers[department],
                          files={"file": ("pipe_nodes.gpkg", broken, "application/geopackage+sqlite3")})
    assert r.status_code < 500 and no_server_paths(r.text, settings), r.text
    if r.status_code >= 400:
        return
    location = r.headers["Location"]
    deadline = time.monotonic() + 120
    record = service.http.get(location, headers=service.headers[department]).json()
    while record["status"] not in ("succeeded", "failed") and time.monotonic() < deadline:
        time.sleep(0.5)
        record = service.http.get(location, headers=service.headers[department]).json()
    assert record["status"] == "failed"
    for text in (service.http.get(location, headers=service.headers[department]).text,
                 service.get("/api/deliveries/pipe_nodes", department).text,
                 service.get(f"/jobs/{record['job_id']}", department).text):
        assert no_server_paths(text, settings), text[:500]


def test_server_paths_are_taken_out_of_messages_but_urls_are_kept() -> None:
    from gis.security.disclosure import without_paths

    assert without_paths("'/tmp/gis-proposal-x/upload.gpkg' not recognized") == "'<file>' not recognized"
    assert without_paths("/vsizip//tmp/a/upload.zip/b.shp: bad") == "<file>: bad"
    kept = ("http://127.0.0.1:8000/api/deliveries/roads/3", "m³/h", "a/b/c")
    assert [without_paths(t) for t in kept] == list(kept)
