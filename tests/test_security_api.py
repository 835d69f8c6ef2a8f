"""Access control through the real service: identities, hidden layers, masked fields, row rules, the audit log,
and the matrix role x layer x access path that fails on any leak.

The module serves its own clone (keys made here, a JWKS of its own, a key cache of 0 s so revocation is
seen at once, and an audit log nobody else writes).
"""

import base64
import csv
import io
import json
import math
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

import httpx
import jwt
import mapbox_vector_tile
import psycopg
import pytest
from conftest import TEST_KEYS
from cryptography.hazmat.primitives.asymmetric import rsa
from map_styles import drawn_collections

from gis.layers import AccessClass, LayerRegistry
from gis.security import keys
from gis.security.policy import Policy, load_policy, policy_path, readable
from gis.settings import Settings

ROLES = (None, *TEST_KEYS, "policing_app")  # None: anonymous
PATHS = ("collection", "queryables", "items", "item", "history", "tile")
ISSUER, AUDIENCE = "https://idp.example/realms/gis", "gis-api"


@dataclass(frozen=True)
class Service:
    url: str
    db_url: str
    keys: dict[str | None, str]  # role -> key
    jurisdiction: str
    signing_key: rsa.RSAPrivateKey
    http: httpx.Client


@pytest.fixture(scope="module")
def policy(registry: LayerRegistry, settings: Settings) -> Policy:
    return load_policy(policy_path(settings.layers_dir), registry)


@pytest.fixture(scope="module")
def service(clone_db_module: str, serve_api: Callable[[str], AbstractContextManager[str]],
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    url = clone_db_module
    with psycopg.connect(url) as conn:
        station = conn.execute("SELECT station FROM policing.police_jurisdictions ORDER BY fid LIMIT 1").fetchone()
        assert station is not None
        _record, police = keys.create_key(conn, "police of one station", "policing_app", "",
                                          {"jurisdiction": station[0]})
        conn.commit()
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(private.public_key()))
    jwks = tmp_path_factory.mktemp("jwks") / "jwks.json"
    jwks.write_text(json.dumps({"keys": [{**jwk, "kid": "test-1", "use": "sig", "alg": "RS256"}]}))
    with pytest.MonkeyPatch.context() as patch:
        for name, value in (("JWKS", str(jwks)), ("JWT_ISSUER", ISSUER), ("JWT_AUDIENCE", AUDIENCE),
                            ("KEY_CACHE_SECONDS", "0")):
            patch.setenv(f"GIS_AUTH_{name}", value)
        with serve_api(url) as base, httpx.Client(timeout=60) as http:
            yield Service(base, url, {None: "", **TEST_KEYS, "policing_app": police}, str(station[0]), private,
                          http)


@pytest.fixture(scope="module")
def clone_db_module(server_url: str, template_db: str) -> Iterator[str]:
    from conftest import cloned_database

    with cloned_database(server_url, template_db, "gis_test_security") as url:
        yield url


def get(service: Service, path: str, role: str | None = None, **params: Any) -> httpx.Response:
    headers = {"X-API-Key": service.keys[role]} if role else {}
    return service.http.get(service.url + path, params=params, headers=headers)


def token(service: Service, **claims: Any) -> str:
    body = {"sub": "user-7", "iss": ISSUER, "aud": AUDIENCE, "exp": int(time.time()) + 300, "role": "analyst",
            **claims}
    return jwt.encode(body, service.signing_key, algorithm="RS256", headers={"kid": "test-1"})


# -- identities ------------------------------------------------------------------------------------------

def test_anonymous_reads_public_layers(service: Service) -> None:
    assert get(service, "/collections/roads/items", limit=1).status_code == 200


@pytest.mark.parametrize("how", ["header", "query", "basic-password", "basic-user", "bearer"])
def test_each_credential_form_is_accepted(service: Service, how: str) -> None:
    key, params, headers = service.keys["analyst"], {}, {}
    if how == "header":
        headers = {"X-API-Key": key}
    elif how == "query":
        params = {"api_key": key}
    elif how == "basic-password":
        headers = {"Authorization": "Basic " + base64.b64encode(f"qgis:{key}".encode()).decode()}
    elif how == "basic-user":
        headers = {"Authorization": "Basic " + base64.b64encode(f"{key}:".encode()).decode()}
    else:
        headers = {"Authorization": f"Bearer {token(service)}"}
    r = httpx.get(service.url + "/collections/pipelines/items", params={"limit": 2, **params}, headers=headers)
    assert r.status_code == 200, r.text
    if how == "query":  # QGIS 3.22 follows next links verbatim: the key must be in them
        assert f"api_key={key}" in next(link["href"] for link in r.json()["links"] if link["rel"] == "next")


@pytest.mark.parametrize("credential", [
    {"headers": {"X-API-Key": "gk_nosuch_xxxxxxxxxxxx"}},
    {"params": {"api_key": "wrong"}},
    {"headers": {"Authorization": "Basic !!!"}},
    {"headers": {"Authorization": "Digest abc"}},
    {"headers": {"Authorization": "Bearer not.a.token"}},
])
def test_bad_credentials_are_401_even_on_public_layers(service: Service, credential: dict[str, Any]) -> None:
    r = httpx.get(service.url + "/collections/roads/items", timeout=30, **credential)
    assert r.status_code == 401 and "www-authenticate" in r.headers
    assert r.json()["code"] == "HTTPError" and "Traceback" not in r.text


@pytest.mark.parametrize("claims", [
    {"exp": int(time.time()) - 10}, {"aud": "someone-else"}, {"iss": "https://evil.example"}, {"role": "nosuch"},
])
def test_bearer_tokens_are_checked(service: Service, claims: dict[str, Any]) -> None:
    r = httpx.get(service.url + "/collections/roads", headers={"Authorization": f"Bearer {token(service, **claims)}"})
    assert r.status_code == 401


def test_bearer_token_signed_by_another_key_is_401(service: Service) -> None:
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    forged = jwt.encode({"sub": "x", "iss": ISSUER, "aud": AUDIENCE, "exp": int(time.time()) + 60, "role": "admin"},
                        other, algorithm="RS256", headers={"kid": "test-1"})
    assert httpx.get(service.url + "/collections/incidents",
                     headers={"Authorization": f"Bearer {forged}"}).status_code == 401


def test_revoked_key_is_refused(service: Service) -> None:
    with psycopg.connect(service.db_url) as conn:
        record, key = keys.create_key(conn, "short-lived", "analyst", "")
        conn.commit()
        assert httpx.get(service.url + "/collections/pipelines", headers={"X-API-Key": key}).status_code == 200
        keys.revoke_key(conn, record.key_id)
        conn.commit()
    assert httpx.get(service.url + "/collections/pipelines", headers={"X-API-Key": key}).status_code == 401


# -- what each role sees -----------------------------------------------------------------------------------

def test_collections_list_only_what_the_role_may_read(service: Service, policy: Policy,
                                                      registry: LayerRegistry) -> None:
    for role in ROLES:
        listed = [c["id"] for c in get(service, "/collections", role).json()["collections"]]
        expected = policy.anonymous if role is None else policy.role(role)
        assert expected is not None
        rasters = [r for r, spec in registry.rasters.items() if readable(expected.spec, spec)]
        assert listed == [*expected.views, *rasters], role


def test_openapi_names_only_visible_layers(service: Service) -> None:
    text = get(service, "/openapi", f="json").text
    assert "incidents" not in text and "pipelines" not in text and "roads" in text
    assert "incidents" in get(service, "/openapi", "admin", f="json").text


def test_hidden_layer_answers_as_a_missing_one(service: Service) -> None:
    for path in ("", "/items", "/queryables", "/items/x", "/items/x/history", "/tiles",
                 "/tiles/WebMercatorQuad/0/0/0"):
        hidden = get(service, f"/collections/incidents{path}", "analyst")
        missing = get(service, f"/collections/nosuch{path}", "analyst")
        assert hidden.status_code == missing.status_code == 404, path
        assert hidden.text.replace("incidents", "X") == missing.text.replace("nosuch", "X"), path


def test_masked_fields_are_not_queryable_filterable_or_sortable(service: Service) -> None:
    schema = get(service, "/collections/pipelines/queryables", "planner").json()
    assert "pressure_class" not in schema["properties"] and "diameter_mm" in schema["properties"]
    for params in ({"filter": "owner = 'x'"}, {"sortby": "owner"}, {"properties": "owner"},
                   {"pressure_class": "high"}):
        r = get(service, "/collections/pipelines/items", "planner", **params)
        assert r.status_code == 400, params
    assert get(service, "/collections/pipelines/items", "pipeline_app", filter="owner = 'x'").status_code == 200


def test_row_rule_keeps_incidents_inside_the_jurisdiction(service: Service) -> None:
    with psycopg.connect(service.db_url) as conn:
        inside = {r[0] for r in conn.execute(
            "SELECT i.fid FROM policing.incidents i WHERE EXISTS (SELECT 1 FROM policing.police_jurisdictions j "
            "WHERE j.station = %s AND ST_Intersects(j.geom, i.geom))", (service.jurisdiction,))}
        outside = conn.execute("SELECT fid FROM policing.incidents WHERE NOT (fid = ANY(%s)) LIMIT 1",
                               (list(inside),)).fetchone()
    assert inside and outside is not None
    page = get(service, "/collections/incidents/items", "policing_app", limit=10000).json()
    assert {f["id"] for f in page["features"]} == inside
    assert page["numberMatched"] == len(inside)
    assert "numberOfFeatures" not in get(service, "/collections/incidents", "policing_app").json()
    assert get(service, f"/collections/incidents/items/{outside[0]}", "policing_app").status_code == 404
    assert get(service, f"/collections/incidents/items/{outside[0]}/history", "policing_app").status_code == 404
    assert get(service, f"/collections/incidents/items/{next(iter(inside))}", "policing_app").status_code == 200
    tile = get(service, "/collections/incidents/tiles/WebMercatorQuad/0/0/0", "policing_app")
    assert {f["properties"]["fid"] for f in mapbox_vector_tile.decode(tile.content)["incidents"]["features"]} == inside


def test_row_rule_without_the_claim_shows_no_rows(service: Service) -> None:
    with psycopg.connect(service.db_url) as conn:
        _record, key = keys.create_key(conn, "police without a station", "policing_app", "")
        conn.commit()
    page = httpx.get(service.url + "/collections/incidents/items", headers={"X-API-Key": key}).json()
    assert page["features"] == []


# -- the matrix --------------------------------------------------------------------------------------------

def _tile_of(lon: float, lat: float, z: int) -> tuple[int, int]:
    n = 1 << z
    x = int((lon + 180.0) / 360.0 * n)
    y = int((1.0 - math.asinh(math.tan(math.radians(lat))) / math.pi) / 2.0 * n)
    return y, x


@pytest.fixture(scope="module")
def samples(service: Service, registry: LayerRegistry) -> dict[str, tuple[str, str]]:
    """layer -> (a feature id, the path of a z15 tile holding it: every field the caller sees is in it)."""
    found = {}
    with psycopg.connect(service.db_url) as conn:
        for spec in registry.values():
            row = conn.execute(psycopg.sql.SQL(
                "SELECT fid, ST_X(p), ST_Y(p) FROM (SELECT fid, ST_PointOnSurface(geom) p FROM {} ORDER BY fid "
                "LIMIT 1) s").format(psycopg.sql.Identifier(spec.domain.value, spec.id))).fetchone()
            assert row is not None, spec.id
            y, x = _tile_of(row[1], row[2], 15)
            found[spec.id] = (row[0], f"/collections/{spec.id}/tiles/WebMercatorQuad/15/{y}/{x}")
    return found


def _property_names(path: str, response: httpx.Response) -> set[str]:
    if path == "queryables":
        return set(response.json()["properties"])
    if path == "tile":
        if response.status_code == 204:
            return set()
        return {k for layer in mapbox_vector_tile.decode(response.content).values()
                for f in layer["features"] for k in f["properties"]}
    if path == "collection":
        return set()
    body = response.json()
    features = body.get("features", [body])
    return {k for f in features for k in f["properties"]}


@pytest.mark.parametrize("role", ROLES)
def test_matrix_role_layer_path_has_no_leak(service: Service, policy: Policy, registry: LayerRegistry,
                                            samples: dict[str, tuple[str, str]], role: str | None) -> None:
    granted = policy.anonymous if role is None else policy.role(role)
    assert granted is not None
    for spec in registry.values():
        fid, tile = samples[spec.id]
        urls = {"collection": f"/collections/{spec.id}", "queryables": f"/collections/{spec.id}/queryables",
                "items": f"/collections/{spec.id}/items?limit=20", "item": f"/collections/{spec.id}/items/{fid}",
                "history": f"/collections/{spec.id}/items/{fid}/history", "tile": tile}
        view = granted.views.get(spec.id)
        for path in PATHS:
            r = get(service, urls[path], role)
            where = f"{role} {spec.id} {path}"
            if view is None:
                assert r.status_code == 404, where
                assert spec.id not in r.text.replace(f"'{spec.id}'", ""), where  # the message only echoes the id
                continue
            if view.rows is not None and path in ("item", "history") and r.status_code == 404:
                continue  # the sample feature lies outside the caller's rows
            assert r.status_code in (200, 204), (where, r.status_code, r.text[:300])
            leaked = _property_names(path, r) & set(view.masked)
            assert not leaked, (where, leaked)


@pytest.mark.parametrize("role", ROLES)
def test_matrix_of_the_other_paths_has_no_leak(service: Service, policy: Policy, registry: LayerRegistry,
                                               samples: dict[str, tuple[str, str]], role: str | None) -> None:
    """HTML pages, CSV downloads, catalog records, the web map's style, the OpenAPI document and the rasters."""
    granted = policy.anonymous if role is None else policy.role(role)
    assert granted is not None
    for spec in registry.values():
        view = granted.views.get(spec.id)
        where = f"{role} {spec.id}"
        page = get(service, f"/collections/{spec.id}/items", role, f="html", limit=20)
        download = get(service, f"/collections/{spec.id}/download", role, f="csv", bbox="123.3,41.7,123.5,41.9")
        record = get(service, f"/catalog/items/{spec.id}", role)
        if view is None:
            assert (page.status_code, download.status_code, record.status_code) == (404, 404, 404), where
            continue
        assert (page.status_code, download.status_code, record.status_code) == (200, 200, 200), where
        header = next(csv.reader(io.StringIO(download.text)))
        assert not set(header) & set(view.masked), (where, "csv")
        assert not {m for m in view.masked if f"<th>{m}</th>" in page.text}, (where, "html")
    visible = set(granted.views) | {r for r, spec in registry.rasters.items() if readable(granted.spec, spec)}
    style = get(service, "/map/style.json", role).json()
    assert set(drawn_collections(style)) == visible
    records = get(service, "/catalog/items", role, limit=1000).json()["features"]
    assert {r["id"] for r in records} == visible
    document = get(service, "/openapi", role, f="json").text
    hidden = (set(registry) | set(registry.rasters)) - visible
    assert not {layer_id for layer_id in hidden if f'"{layer_id}"' in document}, role
    for raster_id in registry.rasters:
        coverage = get(service, f"/collections/{raster_id}/coverage", role, bbox="123.40,41.74,123.41,41.75")
        assert coverage.status_code == (200 if raster_id in visible else 404), (role, raster_id)


def test_audit_log_after_the_matrix(service: Service, policy: Policy, registry: LayerRegistry,
                                    samples: dict[str, tuple[str, str]]) -> None:
    for role in ROLES:  # the matrix, once more, so this test stands alone
        for spec in registry.values():
            get(service, f"/collections/{spec.id}/items", role, limit=3, bbox="122,41,124,43")
    with psycopg.connect(service.db_url) as conn:
        rows = conn.execute("SELECT subject, role, layer_id, query, features FROM ops.audit_log "
                            "WHERE action = 'read'").fetchall()
    logged = {(r[1], r[2]) for r in rows}
    public = {s.id for s in registry.values() if s.access is AccessClass.public}
    assert not {layer for _, layer in logged} & public  # public reads cost no audit row
    assert "public" not in {r[1] for r in rows}
    for role in ROLES[1:]:
        role_policy = policy.role(role)
        assert role_policy is not None
        for layer_id in role_policy.views:
            if layer_id not in public:
                assert (role, layer_id) in logged, (role, layer_id)
    with_box = [r for r in rows if r[3].get("bbox") == "122,41,124,43"]
    assert with_box and all(r[4] is not None for r in with_box) and all(r[0].startswith("key:") for r in with_box)


SQUARE_NEAR_THE_RIVER = {"type": "Polygon", "coordinates": [[[123.40, 41.75], [123.43, 41.75], [123.43, 41.78],
                                                               [123.40, 41.78], [123.40, 41.75]]]}


def _audited(service: Service, path: str, role: str) -> set[str]:
    with psycopg.connect(service.db_url) as conn:
        return {r[0] for r in conn.execute("SELECT layer_id FROM ops.audit_log WHERE action = 'read' AND path = %s "
                                           "AND role = %s", (path, role))}


@pytest.mark.parametrize(("role", "process", "inputs", "layer"), [
    ("pipeline_app", "pipe-burst", {"pipe": "water"}, "pipelines"),
    ("pipeline_app", "dem-profile", {"pipes": ["water"]}, "pipelines"),
    ("planner", "overlap-check", {"geometry": SQUARE_NEAR_THE_RIVER}, "ecological_redline"),
])
def test_processes_audit_their_reads_of_non_public_layers(service: Service, registry: LayerRegistry, role: str,
                                                          process: str, inputs: dict[str, Any], layer: str) -> None:
    with psycopg.connect(service.db_url) as conn:
        water = conn.execute("SELECT fid FROM pipeline.pipelines WHERE utility = 'water' ORDER BY fid LIMIT 1"
                             ).fetchone()
    assert water is not None
    inputs = {k: ([water[0]] if v == ["water"] else water[0] if v == "water" else v) for k, v in inputs.items()}
    path = f"/processes/{process}/execution"
    response = service.http.post(service.url + path, json={"inputs": inputs}, headers={"X-API-Key": service.keys[role]})
    assert response.status_code == 200, response.text[:300]
    audited = _audited(service, path, role)
    assert layer in audited
    assert not {i for i in audited if (registry.get(i) or registry.rasters[i]).access is AccessClass.public}


def test_the_planning_route_audits_the_layers_its_check_read(service: Service) -> None:
    path = "/api/planning/overlap-checks"
    response = service.http.post(service.url + path, json={"geometry": SQUARE_NEAR_THE_RIVER},
                                 headers={"X-API-Key": service.keys["planner"]})
    assert response.status_code == 200, response.text[:300]
    assert "ecological_redline" in _audited(service, path, "planner")


def test_audit_log_is_read_by_auditors_only(service: Service) -> None:
    assert get(service, "/audit").status_code == 401
    assert get(service, "/audit", "analyst").status_code == 403
    get(service, "/collections/pipelines/items", "analyst", limit=1)
    entries = get(service, "/audit", "auditor", layer="pipelines", limit=5).json()["entries"]
    assert entries and entries[0]["layer_id"] == "pipelines" and entries[0]["role"] == "analyst"
    assert get(service, "/audit", "auditor", limit=1).json()["entries"][0]["action"] == "admin:audit-read"


def test_keys_cli_creates_lists_and_revokes(service: Service, capsys: pytest.CaptureFixture[str],
                                            monkeypatch: pytest.MonkeyPatch, settings: Settings) -> None:
    from gis.cli import main

    monkeypatch.setenv("GIS_DATABASE_URL", service.db_url)
    monkeypatch.setenv("GIS_LAYERS_DIR", str(settings.layers_dir))
    monkeypatch.setenv("GIS_STYLES_DIR", str(settings.styles_dir))
    assert main(["keys", "create", "--role", "nosuch", "--name", "x"]) == 1
    assert main(["keys", "create", "--role", "pipeline_app", "--name", "pump station 3"]) == 0
    key = capsys.readouterr().out.strip().splitlines()[-1]
    assert httpx.get(service.url + "/collections/pipe_sensors", params={"api_key": key}).status_code == 200
    key_id = keys.key_id_of(key)
    assert main(["keys", "list"]) == 0 and key_id in capsys.readouterr().out
    assert main(["keys", "revoke", str(key_id)]) == 0
    assert httpx.get(service.url + "/collections/pipe_sensors", params={"api_key": key}).status_code == 401
    with psycopg.connect(service.db_url) as conn:
        actions = {r[0] for r in conn.execute("SELECT action FROM ops.audit_log WHERE method = 'cli'")}
    assert actions == {"admin:key-create", "admin:key-revoke"}


def test_cli_keys_never_store_the_key(service: Service) -> None:
    with psycopg.connect(service.db_url) as conn:
        stored = conn.execute("SELECT string_agg(key_hash::text || claims::text || name, ' ') "
                              "FROM ops.api_keys").fetchone()
    assert stored is not None and all(k.split("_", 2)[2] not in stored[0] for k in TEST_KEYS.values())


