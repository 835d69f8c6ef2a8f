"""The one base of every process we run through pygeoapi: described by its input and output models, strict about
its inputs (their validation), bound to the caller of the request that started it, and audited like the Features
routes.

A process is a subclass in a module of its domain that gives its id, title, `abstract` and `example_inputs`, its
`Inputs` model (or `inputs(context)` where a rules file decides choices or bounds) and either `analyse` (the usual
shape: read some layers whole, analyse, render in the format asked for) or `run` (anything else). A process of a
domain with rules (DomainProcess) finds them with `rules_in`, and its `abstract` may quote them.

The job manager hands a processor out while still in the request's context (services.processes.pygeoapi_bridge), so
`bind` captures the caller's identity, readable layers and rasters there (services.processes.access) and an
asynchronous job keeps its caller's rights after the request has ended.
"""

import copy
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, fields
from functools import partial
from typing import Any, ClassVar

import orjson
import psycopg
from pydantic import BaseModel
from pygeoapi.process.base import BaseProcessor

from gis.analysis import place_report
from gis.analysis.overlap import Access
from gis.analysis.place_report import Style
from gis.layers import AccessClass, LayerRegistry
from gis.project import Project
from gis.security import audit
from services.auth.credentials import Caller
from services.processes.access import CALLER_ACCESS, CALLER_RASTERS, PROCESS_CALLER, require_full_read
from services.processes.inputs import ProcessInputs, Result, described, input_value, parse_inputs
from services.processes.pygeoapi_bridge import ProcessContext

MAX_INPUT_CHARS = 2000


@dataclass(frozen=True)
class Report:
    """How a domain's result is answered in each output format."""

    json: Callable[[Any], Any]
    geojson: Callable[[Any], Any]
    html: Callable[[Any], str]

    def answer(self, result: Any, fmt: str) -> tuple[str, Any]:
        if fmt == "geojson":
            return "application/geo+json", orjson.dumps(self.geojson(result))
        if fmt == "html":
            return "text/html", self.html(result)
        return "application/json", self.json(result)


def places_report(styles: Mapping[str, Style], legend: Mapping[str, str]) -> Report:
    """The answers of the analyses that find places (environment, policing): JSON, GeoJSON, a page with a map."""
    return Report(place_report.to_json, place_report.to_geojson,
                  partial(place_report.to_html, styles=styles, legend=legend))


class Process(BaseProcessor):
    """One OGC API process. Subclasses with an `id` are the processes services.processes registers."""

    id: ClassVar[str] = ""
    title: ClassVar[tuple[str, str]] = ("", "")  # English, Chinese
    abstract: ClassVar[str] = ""  # what it does, in English (or `summary`, where the rules in force say more)
    keywords: ClassVar[tuple[str, ...]] = ()
    job_control: ClassVar[tuple[str, ...]] = ("sync-execute", "async-execute")
    Inputs: ClassVar[type[ProcessInputs]] = ProcessInputs
    Outputs: ClassVar[type[BaseModel]] = Result
    report: ClassVar[Report | None] = None  # for `analyse`: how its result is answered
    rows_applied: ClassVar[bool] = False  # `analyse` applies the caller's row rule on `reads` itself
    unaudited: ClassVar[frozenset[str]] = frozenset({"file"})  # an uploaded file's bytes: the audit keeps the rest
    example_inputs: ClassVar[Mapping[str, Any]] = {}  # the description's example: inputs that run as they stand

    # -- the description ---------------------------------------------------------------------------------
    @classmethod
    def inputs(cls, context: ProcessContext) -> type[ProcessInputs]:
        """The inputs model: `Inputs`, unless the rules in force decide a choice or a bound of it."""
        return cls.Inputs

    @classmethod
    def summary(cls, context: ProcessContext) -> str | dict[str, str]:
        """What the process does (English, or by language): `abstract`, unless the rules in force say more."""
        return cls.abstract

    @classmethod
    def titles(cls, context: ProcessContext) -> tuple[str, str]:
        """The title (English, Chinese): `title`, unless the rules in force name what it is about."""
        return cls.title

    @classmethod
    def example(cls, context: ProcessContext) -> dict[str, Any]:
        """The description's example inputs: `example_inputs`, unless they depend on the rules in force."""
        return copy.deepcopy(dict(cls.example_inputs))  # the class's own stays as declared, whatever is done with it

    @classmethod
    def describe(cls, context: ProcessContext, inputs: type[ProcessInputs]) -> dict[str, Any]:
        """The process for pygeoapi's configuration: the class by dotted path, and its description."""
        summary, (english, chinese) = cls.summary(context), cls.titles(context)
        return {"name": f"{cls.__module__}.{cls.__qualname__}", "metadata": {
            "version": "1.0.0", "id": cls.id, "title": {"en": english, "zh": chinese},
            "description": summary if isinstance(summary, dict) else {"en": summary},
            "jobControlOptions": list(cls.job_control), "outputTransmission": ["value"],
            "keywords": list(cls.keywords), "links": [], "inputs": described(inputs),
            "outputs": described(cls.Outputs, occurs=False), "example": {"inputs": cls.example(context)}}}

    # -- the run -----------------------------------------------------------------------------------------
    def __init__(self, processor_def: dict[str, Any]) -> None:
        super().__init__(processor_def, dict(processor_def.get("metadata") or {}))
        self._context: ProcessContext | None = None
        self.manager: Any = None
        self.job_id: str | None = None
        self.access: Access = None  # None outside a request: every layer, whole
        self.rasters: frozenset[str] | None = None  # None outside a request: every raster
        self.caller: Caller | None = None  # None outside a request: nobody to audit
        self.sent: Mapping[str, Any] = {}  # the inputs as sent, for the audit

    def bind(self, context: ProcessContext, manager: Any) -> None:
        self._context = context
        self.manager = manager
        self.access = CALLER_ACCESS.get()
        self.rasters = CALLER_RASTERS.get()
        self.caller = PROCESS_CALLER.get()

    def set_job_id(self, job_id: str) -> None:
        self.job_id = job_id

    @property
    def context(self) -> ProcessContext:
        if self._context is None:
            raise RuntimeError("process run without a context")
        return self._context

    def execute(self, data: Any, outputs: dict[str, Any] | None = None) -> tuple[str, Any]:
        inputs = parse_inputs(self.context.inputs[self.id], data)
        self.sent = data
        return self.run(inputs)

    def run(self, inputs: Any) -> tuple[str, Any]:
        """Read the layers `reads` names (whole: the caller must be allowed every field and row), `analyse`,
        audit, and answer in the format asked for."""
        if self.report is None:
            raise NotImplementedError(f"{type(self).__name__} gives neither run nor report")
        layers = self.reads(inputs)
        self.require_full_read(layers, layers if self.rows_applied else ())
        with self.connection() as conn:
            result = self.analyse(conn, inputs)
            self.audit_reads(conn, dict.fromkeys(layers, self.counted(result)))
        return self.report.answer(result, inputs.format)

    def reads(self, inputs: Any) -> tuple[str, ...]:
        raise NotImplementedError

    def analyse(self, conn: psycopg.Connection, inputs: Any) -> Any:
        raise NotImplementedError

    def counted(self, result: Any) -> int | None:
        """How many features of the layers read the answer rests on (for the audit log)."""
        return sum(len(items) for items in result.places.values())

    # -- for subclasses ----------------------------------------------------------------------------------
    @contextmanager
    def connection(self) -> Iterator[psycopg.Connection]:
        with self.context.pool.connection() as conn:
            yield conn

    def require_full_read(self, layer_ids: Iterable[str], rows_applied: Iterable[str] = ()) -> None:
        require_full_read(self.access, self.context.registry, layer_ids, rows_applied)

    def audit_reads(self, conn: psycopg.Connection, features: Mapping[str, int | None]) -> None:
        """One ops.audit_log row per internal or restricted layer or raster the answer read, with how many of
        its features it rests on (None where that is not a count of features) and the inputs as sent."""
        if self.caller is None:
            return
        registry: LayerRegistry = self.context.registry
        caller = self.caller
        values = {k: input_value(self.sent, k) for k in self.sent if k not in self.unaudited}
        query = {k: orjson.dumps(v, default=str).decode()[:MAX_INPUT_CHARS] for k, v in values.items()
                 if v is not None}
        path = f"/processes/{self.id}/execution"
        for layer_id, count in features.items():
            spec = registry.get(layer_id) or registry.rasters.get(layer_id)
            if spec is None or spec.access is AccessClass.public:
                continue
            audit.record(conn, audit.AuditEntry(caller.subject, caller.role.name, caller.method, caller.key_id,
                                                "read", layer_id, path, query, count, 200))


class DomainProcess[R](Process):
    """A process of one domain (pipeline, environment, policing), following the project's rules for it: the
    Project field `rules_field` names them, and `abstract` may name their values as `{rules.…}` fields (str.format),
    filled in the description from the rules in force."""

    rules_field: ClassVar[str] = ""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.rules_field and cls.rules_field not in {f.name for f in fields(Project)}:  # fails the import
            raise TypeError(f"{cls.__qualname__}.rules_field: '{cls.rules_field}' is no field of gis.project.Project")

    @classmethod
    def rules_in(cls, context: ProcessContext) -> R:
        rules: R = getattr(context.project, cls.rules_field)
        return rules

    @classmethod
    def summary(cls, context: ProcessContext) -> str | dict[str, str]:
        return cls.abstract.format(rules=cls.rules_in(context))

    @property
    def rules(self) -> R:
        return self.rules_in(self.context)


class PlacesProcess[R](DomainProcess[R]):
    """An analysis that finds places (environment, policing): answered by `places_report`; the format asked for is
    not audited."""

    unaudited = frozenset({"file", "format"})
