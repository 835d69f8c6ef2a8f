"""Schemathesis against the served OpenAPI document (`/openapi`), as an administrator and anonymously:
no operation answers 500, and every answer conforms to what the document says (status, media type,
headers, body schema).

Every operation the document lists is exercised, so endpoints added later are covered as they land.
Bounded and repeatable: a fixed seed, a fixed number of generated cases per operation (valid and
invalid ones), no shrinking, no example database. The module writes to a clone of its own (POST and
DELETE operations run too), served by its own instance of the service.
"""

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager

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


def test_every_operation_as_administrator(fuzz_url: str) -> None:
    operations, failures = _fuzz(fuzz_url, ADMIN_HEADERS)
    assert operations >= 20  # the whole document was read (Features, Tiles, Processes, planning, ...)
    assert not failures, "\n\n".join(failures)


def test_every_operation_anonymously(fuzz_url: str) -> None:
    operations, failures = _fuzz(fuzz_url, {})
    assert operations >= 20
    assert not failures, "\n\n".join(failures)
