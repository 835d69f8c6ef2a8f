"""What the environmental and policing processes share: the caller, the inputs check, the output formats
(JSON, GeoJSON, an HTML page with a map) and the audit of reads of internal and restricted layers.

The execution route binds the caller for the request (bind_process_caller); a processor captures it when the
job manager hands the processor out (still in the request's context), so an asynchronous job keeps its
caller's rights, as services.process_access does for the layers and fields.
"""

from collections.abc import Iterable, Mapping
from contextvars import ContextVar
from typing import Any

import orjson
import psycopg
from fastapi import Request
from pygeoapi.process.base import BaseProcessor

from gis.analysis import place_report
from gis.analysis.overlap import Access
from gis.analysis.place_report import PlacesResult, Style
from gis.analysis.proposal import InvalidProposal
from gis.layers import AccessClass, LayerRegistry
from gis.security import audit
from services.auth import Caller, caller_of
from services.process_access import CALLER_ACCESS, require_full_read
from services.process_inputs import input_value

PROCESS_CALLER: ContextVar[Caller | None] = ContextVar("process_caller", default=None)
FORMATS = ("json", "geojson", "html")
FORMAT_INPUT = {"title": "Output format", "minOccurs": 0, "maxOccurs": 1,
                "schema": {"type": "string", "enum": list(FORMATS), "default": "json"}}


def bind_process_caller(request: Request) -> None:
    PROCESS_CALLER.set(caller_of(request))


def describe(module: str, pid: str, cls: str, title: dict[str, str], description: str, keywords: list[str],
             inputs: dict[str, Any], example: dict[str, Any]) -> dict[str, Any]:
    """A process description for the bridge (the class is looked up by its dotted path)."""
    return {"name": f"{module}.{cls}", "metadata": {
        "version": "1.0.0", "id": pid, "title": title, "description": {"en": description},
        "jobControlOptions": ["sync-execute", "async-execute"], "outputTransmission": ["value"],
        "keywords": keywords, "links": [], "inputs": {**inputs, "format": FORMAT_INPUT},
        "outputs": {"result": {"title": "Result", "schema": {"type": "object",
                                                             "contentMediaType": "application/json"}}},
        "example": {"inputs": example}}}


class ApplicationProcessor(BaseProcessor):
    """One analysis over the layers `reads`, answered in the format asked for; subclasses give `run`."""

    styles: Mapping[str, Style] = {}
    legend: Mapping[str, str] = {}

    def __init__(self, processor_def: dict[str, Any]) -> None:
        super().__init__(processor_def, dict(processor_def.get("metadata") or {}))
        self.context: Any = None
        self.manager: Any = None
        self.job_id: str | None = None
        self.access: Access = None
        self.caller: Caller | None = None

    def bind(self, context: Any, manager: Any) -> None:
        self.context = context
        self.manager = manager
        self.access = CALLER_ACCESS.get()
        self.caller = PROCESS_CALLER.get()

    def set_job_id(self, job_id: str) -> None:
        self.job_id = job_id

    def reads(self, data: dict[str, Any]) -> tuple[str, ...]:
        raise NotImplementedError

    def run(self, conn: psycopg.Connection, data: dict[str, Any]) -> PlacesResult:
        raise NotImplementedError

    def counted(self, result: PlacesResult) -> int | None:
        """How many features of the audited layers the answer rests on (for the audit log)."""
        return sum(len(items) for items in result.places.values())

    def execute(self, data: dict[str, Any], outputs: dict[str, Any] | None = None) -> tuple[str, Any]:
        if not isinstance(data, dict):
            raise InvalidProposal("inputs", "an object of named inputs")
        allowed = set(self.metadata.get("inputs", {}))
        unknown = sorted(set(data) - allowed)
        if unknown:
            raise InvalidProposal(unknown[0], "unknown input; this process takes " + ", ".join(sorted(allowed)))
        if self.context is None:
            raise RuntimeError("process run without a context")
        fmt = input_value(data, "format") or "json"
        if fmt not in FORMATS:
            raise InvalidProposal("format", f"'{str(fmt)[:20]}' is not json, geojson or html")
        values = {k: input_value(data, k) for k in data if k != "format"}
        layers = self.reads(values)
        require_full_read(self.access, self.context.registry, layers)
        with self.context.pool.connection() as conn:
            result = self.run(conn, values)
            self._audit(conn, layers, values, self.counted(result))
        if fmt == "geojson":
            return "application/geo+json", orjson.dumps(place_report.to_geojson(result))
        if fmt == "html":
            return "text/html", place_report.to_html(result, self.styles, self.legend)
        return "application/json", place_report.to_json(result)

    def _audit(self, conn: psycopg.Connection, layers: Iterable[str], inputs: dict[str, Any],
               features: int | None) -> None:
        """One ops.audit_log row per internal or restricted layer read, as the Features routes write."""
        registry: LayerRegistry = self.context.registry
        caller = self.caller
        if caller is None:  # run outside a request (CLI, tests of the library): nobody to record
            return
        query = {k: orjson.dumps(v).decode()[:2000] for k, v in inputs.items() if v is not None}
        for layer_id in layers:
            if registry[layer_id].access is AccessClass.public:
                continue
            audit.record(conn, audit.AuditEntry(
                caller.subject, caller.role.name, caller.method, caller.key_id, "read", layer_id,
                f"/processes/{self.metadata.get('id')}/execution", query, features, 200))
