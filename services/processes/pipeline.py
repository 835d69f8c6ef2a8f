"""OGC API - Processes over the pipeline analyses (gis.analysis.pipeline): pipe-burst, pipe-trace,
pipe-cross-section, pipe-clearance and pipe-cover, run by the same pygeoapi machinery and job manager as
services.processes (which registers them). Each answers JSON (default), GeoJSON or an HTML page with a
map (input `format`).
"""

from typing import Any, ClassVar, Literal

import psycopg
from pydantic import Field, create_model

from gis.analysis import pipeline, place_report
from gis.analysis.pipeline_rules import PipelineRules
from gis.security.examples import EXAMPLE_PIPE
from services.processes.base import DomainProcess, Report
from services.processes.inputs import Bbox, Format, GeoJSON, Names, ProcessInputs, names_of, one_of
from services.processes.pygeoapi_bridge import ProcessContext

PIPE_BURST = "pipe-burst"
PIPE_TRACE = "pipe-trace"
PIPE_CROSS_SECTION = "pipe-cross-section"
PIPE_CLEARANCE = "pipe-clearance"
PIPE_COVER = "pipe-cover"
PROCESS_IDS = (PIPE_BURST, PIPE_TRACE, PIPE_CROSS_SECTION, PIPE_CLEARANCE, PIPE_COVER)

REPORT = Report(place_report.to_json, place_report.to_geojson, pipeline.to_html)


def _from_a_pipe(name: str, rules: PipelineRules, **fields: Any) -> type[ProcessInputs]:
    """The inputs of an analysis that starts from a pipe (its fid, or a point near it), with `fields`."""
    point = Field(None, title="Point (GeoJSON, lon/lat)",
                  description=f"instead of pipe: the nearest pipe in service within {rules.network.snap_within_m:g} m")
    return create_model(name, __base__=ProcessInputs, pipe=(str | None, Field(None, title="Pipe fid")),
                        point=(GeoJSON | None, point), **fields, format=(Format, "json"))


def _utilities(rules: PipelineRules) -> list[str]:
    return list(rules.pipelines.known_field("utility").values or ())


BBOX = Field(None, title="Window (minlon,minlat,maxlon,maxlat)")


class _Pipeline(DomainProcess[PipelineRules]):
    """The pipeline processes read the pipes, nodes and buildings whole, and count the places answered."""

    rules_field = "pipeline_rules"
    keywords = ("pipeline", "管线")
    report = REPORT

    def reads(self, inputs: Any) -> tuple[str, ...]:
        return self.rules.pipelines.id, self.rules.nodes.id, self.rules.buildings.id


class BurstProcessor(_Pipeline):
    id = PIPE_BURST
    title = ("Burst isolation", "爆管关阀分析")
    abstract = ("From a pipe fid or a point: the valves to close, the pipes isolated and the buildings within "
                "{rules.network.customers_within_m:g} m that lose supply; closed valves and pipes out of service "
                "respected.")
    example_inputs: ClassVar = {"pipe": EXAMPLE_PIPE}

    @classmethod
    def inputs(cls, context: ProcessContext) -> type[ProcessInputs]:
        rules = cls.rules_in(context)
        return _from_a_pipe("BurstInputs", rules,
                            utility=(one_of(rules.network.utilities) | None, Field(None, title="Utility")))

    def analyse(self, conn: psycopg.Connection, inputs: Any) -> place_report.PlacesResult:
        return pipeline.burst(conn, self.rules, pipe=inputs.pipe, point=inputs.point, utility=inputs.utility)


class TraceProcessor(_Pipeline):
    id = PIPE_TRACE
    title = ("Connectivity trace", "连通性分析")
    abstract = ("The pipes connected downstream (from_node to to_node), upstream or both; closed valves stop the "
                "trace.")
    example_inputs: ClassVar = {"pipe": EXAMPLE_PIPE, "direction": "downstream"}

    @classmethod
    def inputs(cls, context: ProcessContext) -> type[ProcessInputs]:
        rules = cls.rules_in(context)
        return _from_a_pipe("TraceInputs", rules,
                            direction=(Literal["downstream", "upstream", "both"],
                                       Field("downstream", title="Direction")),
                            utility=(one_of(_utilities(rules)) | None, Field(None, title="Utility (with point)")))

    def analyse(self, conn: psycopg.Connection, inputs: Any) -> place_report.PlacesResult:
        return pipeline.trace(conn, self.rules, pipe=inputs.pipe, point=inputs.point, direction=inputs.direction,
                              utility=inputs.utility)


class CrossSectionProcessor(_Pipeline):
    id = PIPE_CROSS_SECTION
    title = ("Cross-section", "横断面分析")
    abstract = ("The pipes a line drawn across the street crosses, in order along it, with diameter and depth "
                "interpolated at the crossing.")
    example_inputs: ClassVar = {"line": {"type": "LineString",
                                         "coordinates": [[123.3698, 41.7275], [123.3706, 41.7275]]}}

    @classmethod
    def inputs(cls, context: ProcessContext) -> type[ProcessInputs]:
        return create_model("CrossSectionInputs", __base__=ProcessInputs,
                            line=(GeoJSON, Field(title="Section line (GeoJSON LineString, lon/lat)")),
                            utilities=(names_of(_utilities(cls.rules_in(context))) | None,
                                       Field(None, title="Utilities (default all)")),
                            format=(Format, "json"))

    def analyse(self, conn: psycopg.Connection, inputs: Any) -> place_report.PlacesResult:
        return pipeline.cross_section(conn, self.rules, inputs.line, inputs.utilities)


class ClearanceProcessor(_Pipeline):
    id = PIPE_CLEARANCE
    title = ("Clearance check (GB 50289)", "管线水平净距检查")
    abstract = ("Parallel runs (and buildings) closer than GB 50289 allows: the rule, required and measured distance "
                "(EPSG:4550, {rules.clearances.measured_from}).")

    @classmethod
    def inputs(cls, context: ProcessContext) -> type[ProcessInputs]:
        return create_model("ClearanceInputs", __base__=ProcessInputs,
                            pairs=(names_of(p.id for p in cls.rules_in(context).clearances.pairs) | None,
                                   Field(None, title="Rules (default all)")),
                            bbox=(Bbox | None, BBOX), format=(Format, "json"))

    def analyse(self, conn: psycopg.Connection, inputs: Any) -> place_report.PlacesResult:
        return pipeline.clearance(conn, self.rules, pairs=inputs.pairs, bbox=inputs.bbox)


class CoverInputs(ProcessInputs):
    utilities: Names | None = Field(None, title="Utilities (default all with a minimum)")
    bbox: Bbox | None = BBOX
    format: Format = "json"


class CoverProcessor(_Pipeline):
    id = PIPE_COVER
    title = ("Minimum cover check", "覆土深度检查")
    abstract = "End nodes whose cover is below the minimum for their utility ({rules.cover.location})."
    Inputs = CoverInputs

    def analyse(self, conn: psycopg.Connection, inputs: Any) -> place_report.PlacesResult:
        return pipeline.cover(conn, self.rules, utilities=inputs.utilities, bbox=inputs.bbox)


PROCESSES = (BurstProcessor, TraceProcessor, CrossSectionProcessor, ClearanceProcessor, CoverProcessor)
