"""Schemathesis against the served OpenAPI document (`/openapi`), as an administrator and anonymously:
no operation answers 500, and every answer conforms to what the document says (status, media type,
headers, body schema).

Every operation the document lists is exercised, so endpoints added later are covered as they land.
Bounded and repeatable: a fixed seed, a fixed number of generated cases per operation (valid and
invalid ones), no shrinking, no example database. The module writes to a clone of its own (POST and
DELETE operations run too), served by its own instance of the service.

Besides what schemathesis generates from the document, every operation gets the hostile input an outside
fuzzer sends (issue 15): NUL and odd text in each path segment and query value, extreme numbers (±1e308,
NaN, infinity, huge integers) in each query parameter, bodies that are valid JSON but not what the document
says (`[1]`, `"x"`, `null`, `true`), broken and deeply nested JSON, and corrupt uploads (a truncated KML, a
GeoPackage or zip that is not one). Each is sent through schemathesis (so the same checks judge the answer),
and every refusal must be a JSON exception naming the parameter.
"""

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from typing import Any

import hypothesis
import pytest
import schemathesis
from conftest import ADMIN_HEADERS, cloned_database
from schemathesis import GenerationMode
from schemathesis.checks import CheckFunction, not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

SEED = 20261122
EXAMPLES_PER_OPERATION = 5  # per generation mode (valid, invalid): 10 requests per operation and caller
CHECKS: list[CheckFunction] = [not_a_server_error, status_code_conformance, content_type_conformance,
                               response_headers_conformance, response_schema_conformance]


@pytest.fixture(scope="module")
def fuzz_url(server_url: str, template_db: str,
             serve_api: Callable[[str], AbstractContextManager[str]]) -> Iterator[str]:
    with cloned_database(server_url, template_db, "gis_test_fuzz") as db_url, serve_api(db_url) as url:
        yield url


def _summary(report: str) -> str:
    """A failure report in a few lines: the distinct check failures and one request reproducing them."""
    checks = [line.strip() for line in report.splitlines() if line.startswith("- ")]
    reproduce = next((line.strip() for line in report.splitlines() if line.strip().startswith("curl ")), "")
    return "; ".join(checks or [report[:300]]) + (f"\n    {reproduce[:400]}" if reproduce else "")


def _fuzz(url: str, headers: dict[str, str]) -> tuple[int, list[str]]:
    """(operations run, failures): every operation of the document the caller is served, valid and invalid input."""
    # The document names only the layers the caller may see, so each caller fuzzes its own document.
    schema = schemathesis.openapi.from_url(f"{url}/openapi?f=json", headers=headers, timeout=60)
    failures: list[str] = []
    operations = 0
    for result in schema.get_all_operations():
        operation = result.ok()
        operations += 1
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

            @hypothesis.seed(SEED)
            @hypothesis.settings(max_examples=EXAMPLES_PER_OPERATION, deadline=None, database=None,
                                 phases=[hypothesis.Phase.generate], suppress_health_check=list(hypothesis.HealthCheck),
                                 print_blob=False)
            @hypothesis.given(case=operation.as_strategy(generation_mode=mode))
            def run(case: schemathesis.Case) -> None:
                case.call_and_validate(headers=headers, checks=CHECKS, timeout=60)

            try:
                run()
            except (Exception, BaseExceptionGroup) as exc:  # schemathesis reports check failures as a group
                failures.append(f"{operation.label} ({mode.value}): {_summary(str(exc))}")
    return operations, failures


# -- hostile input -----------------------------------------------------------------------------------------

HOSTILE_SEGMENTS = ["\x00", "a\x00b", "%00", "\uffff", "é", "x" * 2000, " ", "-1", "1e308", "NaN"]
HOSTILE_VALUES = ["\x00", "a\x00", "", " ", "1e308", "-1e308", "NaN", "Infinity", "-inf", "9" * 40, "-1", "0",
                  "1.5", "1e308,1e308,-1e308,-1e308", "-1e308,-1e308,1e308,1e308", "nan,nan,nan,nan", "[", "'",
                  "\uffff"]
HOSTILE_JSON: list[object] = [[1], "x", None, True, 1, 1e308, {}, {"inputs": [1]}, {"inputs": "x"}, {"inputs": None},
                              {"inputs": {"bbox": [-1e308, -1e308, 1e308, 1e308]}}, {"geometry": 1},
                              {"type": "Feature", "geometry": {"type": "Point", "coordinates": [1e308, -1e308]},
                               "properties": {}}, {"readings": [{"value": 1e308}]}]
HOSTILE_RAW = [b"", b"{", b"NaN", b'{"inputs": 1e400}', b"\x00", b"[" * 3000 + b"]" * 3000, b'{"a": "\\u0000"}']
KML = (b'<?xml version="1.0" encoding="UTF-8"?><kml xmlns="http://www.opengis.net/kml/2.2"><Document><Placemark>'
       b"<Polygon><outerBoundaryIs><LinearRing><coordinates>123.40,41.75 123.402,41.75 123.402,41.752 123.40,41.752 "
       b"123.40,41.75</coordinates></LinearRing></outerBoundaryIs></Polygon></Placemark></Document></kml>")
CORRUPT_UPLOADS = {"application/vnd.google-earth.kml+xml": [KML[:n] for n in (1, 60, 150, len(KML) - 8)],
                   "application/geopackage+sqlite3": [b"SQLite format 3\x00" + b"\x00" * 100, b"garbage"],
                   "application/zip": [b"PK\x03\x04", b"PK\x05\x06" + b"\x00" * 18],
                   "application/geo+json": [b'{"type": "Polygon", "coordinates": 5}', b"[" * 3000]}
# A value for each path parameter that reaches the route, so the hostile one is the only thing wrong.
REACHING = {"collectionId": "roads", "tileMatrixSetId": "WebMercatorQuad", "tileMatrix": "0", "tileRow": "0",
            "tileCol": "0", "process_id": "police-nearest", "featureId": "R000001"}


def _reaching(operation: Any) -> dict[str, str]:
    values = {}
    for parameter in operation.path_parameters:
        schema = parameter.definition.get("schema", {})
        values[parameter.name] = REACHING.get(parameter.name) or (schema.get("enum") or ["x"])[0]
    return values


def _hostile_cases(operation: Any) -> Iterator[tuple[str, Any, dict[str, Any]]]:
    """(what, case, keyword arguments for the call) for every hostile vector that fits the operation."""
    reach = _reaching(operation)
    for name in reach:
        for segment in HOSTILE_SEGMENTS:
            yield f"path {name}={segment[:20]!r}", operation.Case(path_parameters={**reach, name: segment}), {}
    for parameter in operation.query:
        for value in HOSTILE_VALUES:
            yield (f"query {parameter.name}={value[:30]!r}",
                   operation.Case(path_parameters=reach, query={parameter.name: value}), {})
    media = [m for m in (operation.definition.raw.get("requestBody") or {}).get("content", {})]
    if any("json" in m for m in media):
        json_type = next(m for m in media if "json" in m)
        for body in HOSTILE_JSON:
            yield (f"body {str(body)[:40]}", operation.Case(path_parameters=reach, body=body, media_type=json_type), {})
        for raw in HOSTILE_RAW:
            yield (f"raw body {raw[:20]!r}", operation.Case(path_parameters=reach),
                   {"data": raw, "headers": {"Content-Type": json_type}})
    for media_type, blobs in CORRUPT_UPLOADS.items():
        if media_type in media:
            for blob in blobs:
                yield (f"upload {media_type} {blob[:20]!r}", operation.Case(path_parameters=reach),
                       {"data": blob, "headers": {"Content-Type": media_type}})


def _names_the_parameter(response: Any) -> str | None:
    """A refusal (400) is a JSON exception naming the parameter at fault; the problem, or None."""
    if response.status_code != 400:
        return None
    try:
        body = response.json()
    except ValueError:
        return f"400 without a JSON body: {response.text[:120]!r}"
    return None if isinstance(body, dict) and body.get("code") and body.get("parameter") else f"400 naming no " \
        f"parameter: {str(body)[:160]}"


def _fuzz_hostile(url: str, headers: dict[str, str]) -> tuple[int, list[str]]:
    """(requests sent, failures): every hostile vector against every operation of the caller's document."""
    schema = schemathesis.openapi.from_url(f"{url}/openapi?f=json", headers=headers, timeout=60)
    failures: list[str] = []
    sent = 0
    for result in schema.get_all_operations():
        operation = result.ok()
        for what, case, extra in _hostile_cases(operation):
            call_headers = {**headers, **extra.pop("headers", {})}
            sent += 1
            try:
                response = case.call(base_url=url, headers=call_headers, timeout=60, **extra)
                case.validate_response(response, checks=[not_a_server_error, content_type_conformance,
                                                         status_code_conformance], headers=call_headers)
                problem = _names_the_parameter(response)
                if problem:
                    raise AssertionError(problem)
            except (Exception, BaseExceptionGroup) as exc:
                failures.append(f"{operation.label} {what}: {_summary(str(exc))}")
    return sent, failures


def test_hostile_input_to_every_operation_as_administrator(fuzz_url: str) -> None:
    sent, failures = _fuzz_hostile(fuzz_url, ADMIN_HEADERS)
    assert sent >= 1000  # every segment, query value and body of the whole document
    assert not failures, "\n".join(failures[:40])


def test_hostile_input_to_every_operation_anonymously(fuzz_url: str) -> None:
    sent, failures = _fuzz_hostile(fuzz_url, {})
    assert sent >= 500
    assert not failures, "\n".join(failures[:40])


def test_every_operation_as_administrator(fuzz_url: str) -> None:
    operations, failures = _fuzz(fuzz_url, ADMIN_HEADERS)
    assert operations >= 20  # the whole document was read (Features, Tiles, Processes, planning, ...)
    assert not failures, "\n\n".join(failures)


def test_every_operation_anonymously(fuzz_url: str) -> None:
    operations, failures = _fuzz(fuzz_url, {})
    assert operations >= 20
    assert not failures, "\n\n".join(failures)
