"""Parameters declared once: what an endpoint's OpenAPI parameters list, what its unknown-parameter check takes and
what the audit records of a read are the fields of the endpoint's declaration (services.common.parameters).

So adding a query parameter to /items is one new field of `ItemsParameters`: every test here reads the names from
the declaration, the document and the served answers, and none has to change with it.
"""

import inspect
from collections.abc import Iterator
from typing import Any

import httpx
import psycopg
import pytest
from api_models import error
from fastapi.routing import APIRoute

from services.common.parameters import (
    Declaration,
    DownloadParameters,
    HistoryParameters,
    ItemParameters,
    ItemsParameters,
)
from services.routers import features, landing

AUDITED = "pipelines"  # an internal layer: each read of it is one ops.audit_log row
ITEMS = "/collections/{collectionId}/items"
ENDPOINTS: dict[str, type[Declaration]] = {
    ITEMS: ItemsParameters,
    "/collections/{collectionId}/items/{featureId}": ItemParameters,
    "/collections/{collectionId}/items/{featureId}/history": HistoryParameters,
    "/collections/{collectionId}/download": DownloadParameters,
}


@pytest.fixture(scope="module")
def client(api_url: str, admin_headers: dict[str, str]) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=api_url, headers=admin_headers, timeout=60) as c:
        yield c


@pytest.fixture(scope="module")
def document(client: httpx.Client) -> dict[str, Any]:
    found: dict[str, Any] = client.get("/openapi", params={"f": "json"}).json()
    return found


def documented(document: dict[str, Any], path: str) -> dict[str, dict[str, Any]]:
    """The GET operation's query parameters, by name, with references resolved; the credential left out."""
    found = {}
    for parameter in document["paths"][path]["get"]["parameters"]:
        if "$ref" in parameter:
            parameter = document["components"]["parameters"][parameter["$ref"].rsplit("/", 1)[1]]
        if parameter["in"] == "query" and parameter["name"] != "api_key":
            found[parameter["name"]] = parameter
    return found


def as_query_value(example: Any) -> str:
    """A documented example as it goes into a URL (lists comma-separated: the parameters are explode=false)."""
    if isinstance(example, list):
        return ",".join(str(v) for v in example)
    if isinstance(example, bool):
        return str(example).lower()
    return str(example)


@pytest.mark.parametrize("path", ENDPOINTS)
def test_the_document_lists_the_declared_parameters(document: dict[str, Any], path: str) -> None:
    assert set(documented(document, path)) == ENDPOINTS[path].names


def test_every_collection_path_names_the_layer_collection_id(document: dict[str, Any]) -> None:
    templates = [path for path in document["paths"] if path.startswith("/collections/")]
    assert templates and all(path.startswith("/collections/{collectionId}") for path in templates)
    for path in templates:
        for operation in document["paths"][path].values():
            assert {"$ref": "#/components/parameters/collectionId"} in operation["parameters"], path


def test_the_unknown_parameter_check_takes_the_declared_parameters_and_the_queryables(client: httpx.Client) -> None:
    refused = error(client.get(f"/collections/{AUDITED}/items", params={"colour": "red"}), 400)
    assert refused.parameter == "colour"
    takes = set(refused.description.split("this endpoint takes ", 1)[1].split(", "))
    queryables = set(client.get(f"/collections/{AUDITED}/queryables").json()["properties"]) - {"geometry"}
    assert takes == ItemsParameters.names | queryables


def test_the_audit_records_each_declared_items_parameter(client: httpx.Client, document: dict[str, Any],
                                                         loaded_db_url: str) -> None:
    """Every documented parameter, with its documented example, in as few reads as the service takes them together
    (one it refuses beside the others, like a cursor beside sortby, goes to the next read): each read's audit row
    records exactly the parameters it was given, and never the credential."""
    pending = {name: as_query_value(p["example"]) for name, p in documented(document, ITEMS).items()}
    recorded: set[str] = set()
    with psycopg.connect(loaded_db_url, autocommit=True) as db:
        while pending:
            given = dict(pending)
            mark = db.execute("SELECT coalesce(max(audit_id), 0) FROM ops.audit_log").fetchone()
            response = client.get(f"/collections/{AUDITED}/items", params={**given, "api_key": "ignored"})
            while response.status_code == 400 and len(given) > 1:
                given.pop(response.json()["parameter"])
                response = client.get(f"/collections/{AUDITED}/items", params={**given, "api_key": "ignored"})
            assert response.status_code == 200, (given, response.text[:300])
            assert mark is not None
            rows = db.execute("SELECT query FROM ops.audit_log WHERE audit_id > %s AND layer_id = %s AND path = %s",
                              (mark[0], AUDITED, f"/collections/{AUDITED}/items")).fetchall()
            assert [row[0] for row in rows] == [given]
            recorded |= given.keys()
            pending = {k: v for k, v in pending.items() if k not in given}
    assert recorded == ItemsParameters.names


def test_the_pages_parameters_are_made_on_the_event_loop() -> None:
    # FastAPI runs a dependency that is not a coroutine function (a class given to Depends()) in its thread pool:
    # two thread switches per request for a dataclass. The features routes and every document route take theirs
    # from coroutine functions (parameters.on_loop).
    routes = {r.path: r for router in (features.router, landing.router) for r in router.routes
              if isinstance(r, APIRoute)}
    for path in [*(p for p in ENDPOINTS if p != "/collections/{collectionId}/download"), "/collections/{collectionId}",
                 "/collections", "/"]:
        made = [d.call for d in routes[path].dependant.dependencies if d.call is not None]
        assert made and all(inspect.iscoroutinefunction(call) for call in made), path
