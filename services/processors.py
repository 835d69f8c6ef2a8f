"""The base of every process we run through pygeoapi: bound to the caller of the request that started it,
strict about its inputs, and audited like the Features routes.

The job manager hands a processor out while still in the request's context (services.pygeoapi_bridge), so
`bind` captures the caller's identity, readable layers and rasters there (services.process_access) and an
asynchronous job keeps its caller's rights after the request has ended.
"""

from collections.abc import Mapping
from typing import Any

import jsonschema
import orjson
import psycopg
from pygeoapi.process.base import BaseProcessor

from gis.analysis.overlap import Access
from gis.analysis.proposal import InvalidProposal
from gis.layers import AccessClass, LayerRegistry
from gis.security import audit
from services.auth.credentials import Caller
from services.process_access import CALLER_ACCESS, CALLER_RASTERS, PROCESS_CALLER
from services.process_inputs import input_value

MAX_INPUT_CHARS = 2000
UNAUDITED_INPUTS = frozenset({"file"})  # an uploaded proposal's bytes: the audit row keeps the other inputs


_NUMBERS = ("number", "integer")


def check_number_input(name: str, value: Any, schema: dict[str, Any]) -> None:
    """A number input (or an array of numbers) against its declared schema: type, range and count, so 1e308,
    a huge integer or a string is refused naming the input before any analysis does arithmetic with it."""
    items = schema.get("items") if isinstance(schema.get("items"), dict) else {}
    numeric = schema.get("type") in _NUMBERS or (schema.get("type") == "array" and items.get("type") in _NUMBERS)
    if value is None or not numeric:
        return
    error = jsonschema.exceptions.best_match(jsonschema.Draft202012Validator(schema).iter_errors(value))
    if error is not None:
        where = "".join(f"[{p}]" for p in error.absolute_path)
        raise InvalidProposal(name, f"{where + ': ' if where else ''}{error.message[:200]}")


class CallerBoundProcessor(BaseProcessor):
    """Subclasses give `execute`; they check inputs with `known_inputs` and record reads with `audit_reads`."""

    def __init__(self, processor_def: dict[str, Any]) -> None:
        super().__init__(processor_def, dict(processor_def.get("metadata") or {}))
        self.context: Any = None
        self.manager: Any = None
        self.job_id: str | None = None
        self.access: Access = None  # None outside a request: every layer, whole
        self.rasters: frozenset[str] | None = None  # None outside a request: every raster
        self.caller: Caller | None = None  # None outside a request: nobody to audit

    def bind(self, context: Any, manager: Any) -> None:
        self.context = context
        self.manager = manager
        self.access = CALLER_ACCESS.get()
        self.rasters = CALLER_RASTERS.get()
        self.caller = PROCESS_CALLER.get()

    def set_job_id(self, job_id: str) -> None:
        self.job_id = job_id

    def known_inputs(self, data: Any) -> dict[str, Any]:
        """The inputs, if they are an object of inputs this process declares (else InvalidProposal naming one)."""
        if not isinstance(data, dict):
            raise InvalidProposal("inputs", "an object of named inputs")
        allowed = set(self.metadata.get("inputs", {}))
        unknown = sorted(set(data) - allowed)
        if unknown:
            raise InvalidProposal(unknown[0], f"unknown input; this process takes {', '.join(sorted(allowed))}")
        if self.context is None:
            raise RuntimeError("process run without a context")
        for name in data:
            check_number_input(name, input_value(data, name), self.metadata["inputs"][name].get("schema") or {})
        return data

    def audit_reads(self, conn: psycopg.Connection, features: Mapping[str, int | None],
                    inputs: Mapping[str, Any]) -> None:
        """One ops.audit_log row per internal or restricted layer or raster the answer read, with how many of
        its features it rests on (None where that is not a count of features) and the inputs as sent."""
        if self.caller is None:
            return
        registry: LayerRegistry = self.context.registry
        caller = self.caller
        values = {k: input_value(inputs, k) for k in inputs if k not in UNAUDITED_INPUTS}
        query = {k: orjson.dumps(v, default=str).decode()[:MAX_INPUT_CHARS] for k, v in values.items()
                 if v is not None}
        path = f"/processes/{self.metadata.get('id')}/execution"
        for layer_id, count in features.items():
            spec = registry.get(layer_id) or registry.rasters.get(layer_id)
            if spec is None or spec.access is AccessClass.public:
                continue
            audit.record(conn, audit.AuditEntry(caller.subject, caller.role.name, caller.method, caller.key_id,
                                                "read", layer_id, path, query, count, 200))
