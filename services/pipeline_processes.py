"""OGC API - Processes over the pipeline analyses (gis.analysis.pipeline): pipe-burst, pipe-trace,
pipe-cross-section, pipe-clearance and pipe-cover, run by the same pygeoapi machinery and job manager as
services.processes (which registers them). Each answers JSON (default), GeoJSON or an HTML page with a
map (input `format`).
"""

from typing import Any

import orjson

from gis.analysis import pipeline
from gis.analysis.pipeline_rules import PipelineRules
from gis.analysis.proposal import InvalidProposal
from gis.project import Project
from gis.security.examples import EXAMPLE_PIPE
from services.process_access import require_full_read
from services.process_inputs import input_value as _value
from services.processors import CallerBoundProcessor

PIPE_BURST = "pipe-burst"
PIPE_TRACE = "pipe-trace"
PIPE_CROSS_SECTION = "pipe-cross-section"
PIPE_CLEARANCE = "pipe-clearance"
PIPE_COVER = "pipe-cover"
PROCESS_IDS = (PIPE_BURST, PIPE_TRACE, PIPE_CROSS_SECTION, PIPE_CLEARANCE, PIPE_COVER)



def _text(inputs: dict[str, Any], name: str) -> str | None:
    value = _value(inputs, name)
    if value is not None and not isinstance(value, str):
        raise InvalidProposal(name, "a string")
    return value


def _list(inputs: dict[str, Any], name: str) -> list[str] | None:
    value = _value(inputs, name)
    if isinstance(value, str):
        value = [v.strip() for v in value.split(",") if v.strip()]
    if value is not None and not (isinstance(value, list) and all(isinstance(v, str) for v in value)):
        raise InvalidProposal(name, "a list of strings")
    return value


class _PipelineProcessor(CallerBoundProcessor):
    def run(self, conn: Any, rules: PipelineRules, data: dict[str, Any]) -> pipeline.PipelineResult:
        raise NotImplementedError

    def execute(self, data: dict[str, Any], outputs: dict[str, Any] | None = None) -> tuple[str, Any]:
        data = self.known_inputs(data)
        fmt = _value(data, "format") or "json"
        if fmt not in ("json", "geojson", "html"):
            raise InvalidProposal("format", f"'{str(fmt)[:20]}' is not json, geojson or html")
        rules = self.context.project.pipeline_rules
        layers = (rules.pipelines.id, rules.nodes.id, rules.buildings.id)
        require_full_read(self.access, self.context.registry, layers)
        with self.context.pool.connection() as conn:
            result = self.run(conn, rules, data)
            places = sum(len(items) for items in result.places.values())
            self.audit_reads(conn, dict.fromkeys(layers, places), data)
        if fmt == "geojson":
            return "application/geo+json", orjson.dumps(pipeline.to_geojson(result))
        if fmt == "html":
            return "text/html", pipeline.to_html(result)
        return "application/json", pipeline.to_json(result)


class BurstProcessor(_PipelineProcessor):
    def run(self, conn: Any, rules: PipelineRules, data: dict[str, Any]) -> pipeline.PipelineResult:
        return pipeline.burst(conn, rules, pipe=_text(data, "pipe"), point=_value(data, "point"),
                              utility=_text(data, "utility"))


class TraceProcessor(_PipelineProcessor):
    def run(self, conn: Any, rules: PipelineRules, data: dict[str, Any]) -> pipeline.PipelineResult:
        return pipeline.trace(conn, rules, pipe=_text(data, "pipe"), point=_value(data, "point"),
                              direction=_text(data, "direction") or "downstream", utility=_text(data, "utility"))


class CrossSectionProcessor(_PipelineProcessor):
    def run(self, conn: Any, rules: PipelineRules, data: dict[str, Any]) -> pipeline.PipelineResult:
        return pipeline.cross_section(conn, rules, _value(data, "line"), _list(data, "utilities"))


class ClearanceProcessor(_PipelineProcessor):
    def run(self, conn: Any, rules: PipelineRules, data: dict[str, Any]) -> pipeline.PipelineResult:
        return pipeline.clearance(conn, rules, pairs=_list(data, "pairs"), bbox=_value(data, "bbox"))


class CoverProcessor(_PipelineProcessor):
    def run(self, conn: Any, rules: PipelineRules, data: dict[str, Any]) -> pipeline.PipelineResult:
        return pipeline.cover(conn, rules, utilities=_list(data, "utilities"), bbox=_value(data, "bbox"))


def process_metadata(project: Project) -> dict[str, dict[str, Any]]:
    """The pipeline processes' descriptions."""
    rules = project.pipeline_rules
    string = {"type": "string"}
    point = {"title": "Point (GeoJSON, lon/lat)", "description": "instead of pipe: the nearest pipe in service "
             f"within {rules.network.snap_within_m:g} m", "minOccurs": 0, "maxOccurs": 1,
             "schema": {"type": "object", "contentMediaType": "application/geo+json"}}
    bbox = {"title": "Window (minlon,minlat,maxlon,maxlat)", "minOccurs": 0, "maxOccurs": 1,
            "schema": {"type": "array", "items": {"type": "number"}, "minItems": 4, "maxItems": 4}}
    fmt = {"title": "Output format", "minOccurs": 0, "maxOccurs": 1,
           "schema": {"type": "string", "enum": ["json", "geojson", "html"], "default": "json"}}
    utilities = list(rules.pipelines.field("utility").values or ())  # type: ignore[union-attr]

    def describe(pid: str, cls: str, title: dict[str, str], description: str, inputs: dict[str, Any],
                 example: dict[str, Any]) -> dict[str, Any]:
        return {"name": f"{__name__}.{cls}", "metadata": {
            "version": "1.0.0", "id": pid, "title": title, "description": {"en": description},
            "jobControlOptions": ["sync-execute", "async-execute"], "outputTransmission": ["value"],
            "keywords": ["pipeline", "管线"], "links": [], "inputs": {**inputs, "format": fmt},
            "outputs": {"result": {"title": "Result", "schema": {"type": "object",
                                                                 "contentMediaType": "application/json"}}},
            "example": {"inputs": example}}}

    pipe = {"title": "Pipe fid", "minOccurs": 0, "maxOccurs": 1, "schema": string}
    return {
        PIPE_BURST: describe(PIPE_BURST, "BurstProcessor", {"en": "Burst isolation", "zh": "爆管关阀分析"},
                             "From a pipe fid or a point: the valves to close, the pipes isolated and the buildings "
                             f"within {rules.network.customers_within_m:g} m that lose supply; closed valves and "
                             "pipes out of service respected.",
                             {"pipe": pipe, "point": point,
                              "utility": {"title": "Utility", "minOccurs": 0, "maxOccurs": 1,
                                          "schema": {"type": "string", "enum": list(rules.network.utilities)}}},
                             {"pipe": EXAMPLE_PIPE}),
        PIPE_TRACE: describe(PIPE_TRACE, "TraceProcessor", {"en": "Connectivity trace", "zh": "连通性分析"},
                             "The pipes connected downstream (from_node to to_node), upstream or both; closed "
                             "valves stop the trace.",
                             {"pipe": pipe, "point": point,
                              "direction": {"title": "Direction", "minOccurs": 0, "maxOccurs": 1,
                                            "schema": {"type": "string", "enum": ["downstream", "upstream", "both"],
                                                       "default": "downstream"}},
                              "utility": {"title": "Utility (with point)", "minOccurs": 0, "maxOccurs": 1,
                                          "schema": {"type": "string", "enum": utilities}}},
                             {"pipe": EXAMPLE_PIPE, "direction": "downstream"}),
        PIPE_CROSS_SECTION: describe(
            PIPE_CROSS_SECTION, "CrossSectionProcessor", {"en": "Cross-section", "zh": "横断面分析"},
            "The pipes a line drawn across the street crosses, in order along it, with diameter and depth "
            "interpolated at the crossing.",
            {"line": {"title": "Section line (GeoJSON LineString, lon/lat)", "minOccurs": 1, "maxOccurs": 1,
                      "schema": {"type": "object", "contentMediaType": "application/geo+json"}},
             "utilities": {"title": "Utilities (default all)", "minOccurs": 0, "maxOccurs": 1,
                           "schema": {"type": "array", "items": {"type": "string", "enum": utilities}}}},
            {"line": {"type": "LineString", "coordinates": [[123.3698, 41.7275], [123.3706, 41.7275]]}}),
        PIPE_CLEARANCE: describe(
            PIPE_CLEARANCE, "ClearanceProcessor", {"en": "Clearance check (GB 50289)", "zh": "管线水平净距检查"},
            "Parallel runs (and buildings) closer than GB 50289 allows: the rule, required and measured distance "
            f"(EPSG:4550, {rules.clearances.measured_from}).",
            {"pairs": {"title": "Rules (default all)", "minOccurs": 0, "maxOccurs": 1,
                       "schema": {"type": "array", "items": {"type": "string",
                                                             "enum": [p.id for p in rules.clearances.pairs]}}},
             "bbox": bbox}, {}),
        PIPE_COVER: describe(
            PIPE_COVER, "CoverProcessor", {"en": "Minimum cover check", "zh": "覆土深度检查"},
            f"End nodes whose cover is below the minimum for their utility ({rules.cover.location}).",
            {"utilities": {"title": "Utilities (default all with a minimum)", "minOccurs": 0, "maxOccurs": 1,
                           "schema": {"type": "array", "items": {"type": "string"}}},
             "bbox": bbox}, {}),
    }
