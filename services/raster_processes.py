"""OGC API - Processes over the raster layers: `raster-sample` (values at points, e.g. elevations) and
`dem-profile` (the longitudinal profile along pipes or a line: ground against pipe top, as data, an SVG chart
or an HTML page). Run by the same pygeoapi machinery and job manager as services.processes, which registers
them; the caller's readable rasters are captured with the request like its readable layers.
"""

from datetime import datetime
from typing import Any

import numpy as np
import orjson
import shapely
from shapely.geometry import LineString, MultiPoint, Point

from gis import crs as crs_
from gis.analysis.proposal import InvalidProposal, read_geojson, resolve_crs
from gis.errors import NotFound, SourceError
from gis.features.errors import InvalidQuery
from gis.features.temporal import parse_datetime
from gis.layers import LayerRegistry, RasterSpec, RenderingKind
from gis.rasters import profile, versions
from gis.rasters.versions import RasterVersion
from gis.security.examples import EXAMPLE_PIPE
from gis.security.inference import row_limited
from services.pipeline_processes import rules_for
from services.process_inputs import input_value as _value
from services.processors import CallerBoundProcessor

RASTER_SAMPLE = "raster-sample"
DEM_PROFILE = "dem-profile"
DEFAULT_DEM = "dem"
MAX_POINTS = 10_000
DEFAULT_STEP_M = 10.0

def _time(data: dict[str, Any]) -> datetime | None:
    text = _value(data, "datetime")
    if text is None:
        return None
    if not isinstance(text, str):
        raise InvalidProposal("datetime", "an RFC 3339 instant or date")
    try:
        found = parse_datetime(text)
    except InvalidQuery as exc:
        raise InvalidProposal("datetime", exc.problem) from None
    return found.end or found.start


def _lonlat(geoms: list[Any], crs: str | None, declared: str | None, parameter: str) -> list[Any]:
    name = resolve_crs(crs or declared or "OGC:CRS84", "crs")
    try:
        return list(crs_.to_storage_crs(np.array(geoms, dtype=object), name))
    except SourceError as exc:
        raise InvalidProposal(parameter, str(exc)) from None


class _RasterProcessor(CallerBoundProcessor):
    def _raster(self, raster_id: Any) -> RasterSpec:
        registry: LayerRegistry = self.context.registry
        if not isinstance(raster_id, str) or raster_id not in registry.rasters or (
                self.rasters is not None and raster_id not in self.rasters):
            raise NotFound(f"layer: no raster layer '{str(raster_id)[:80]}'")
        return registry.rasters[raster_id]

    def _version(self, spec: RasterSpec, at: datetime | None) -> RasterVersion:
        with self.context.pool.connection() as conn:
            found = versions.version_at(conn, spec.id, at)
        if found is None:
            raise NotFound(f"raster layer '{spec.id}' has no version{' then' if at else ''} (not refreshed yet)")
        return found

    def _format(self, data: dict[str, Any], allowed: tuple[str, ...]) -> str:
        fmt = _value(data, "format") or "json"
        if fmt not in allowed:
            raise InvalidProposal("format", f"'{str(fmt)[:20]}' is not {', '.join(allowed)}")
        return str(fmt)


class SampleProcessor(_RasterProcessor):
    """Values of a raster (elevation by default) at points given as GeoJSON in any supported CRS."""

    def execute(self, data: dict[str, Any], outputs: dict[str, Any] | None = None) -> tuple[str, Any]:
        data = self.known_inputs(data)
        spec = self._raster(_value(data, "layer") or DEFAULT_DEM)
        fmt = self._format(data, ("json", "geojson"))
        method = _value(data, "method") or ("nearest" if spec.rendering.kind is RenderingKind.classes else "bilinear")
        if method not in ("nearest", "bilinear"):
            raise InvalidProposal("method", f"'{str(method)[:20]}' is not nearest or bilinear")
        crs = _value(data, "crs")
        if crs is not None and not isinstance(crs, str):
            raise InvalidProposal("crs", "a CRS name: EPSG:NNNN, its OGC URI, CRS84 or GCJ-02")
        geoms, props, declared = read_geojson(_value(data, "points"), "points")
        points: list[Point] = []
        owners: list[int] = []
        for index, geom in enumerate(geoms):
            parts = list(geom.geoms) if isinstance(geom, MultiPoint) else [geom]
            found = [p for p in parts if isinstance(p, Point) and not p.is_empty]
            if len(found) != len(parts):
                raise InvalidProposal("points", f"feature {index} is a {geom.geom_type}; give points")
            points += found
            owners += [index] * len(parts)
        if len(points) > MAX_POINTS:
            raise InvalidProposal("points", f"{len(points):,} points; at most {MAX_POINTS:,}")
        stored = _lonlat(points, crs, declared, "points")
        lonlat = shapely.get_coordinates(np.array(stored, dtype=object))
        version = self._version(spec, _time(data))
        values = profile.values_at(version, spec, lonlat, bilinear=method == "bilinear")
        features = [{"type": "Feature", "geometry": {"type": "Point", "coordinates": [round(x, 8), round(y, 8)]},
                     "properties": {**props[owner], "value": value, "unit": spec.unit, "layer": spec.id}}
                    for (x, y), value, owner in zip(lonlat.tolist(), values, owners, strict=True)]
        collection = {"type": "FeatureCollection", "features": features,
                      "layer": spec.id, "version": version.version_id, "method": method}
        with self.context.pool.connection() as conn:
            self.audit_reads(conn, {spec.id: None}, data)
        if fmt == "geojson":
            return "application/geo+json", orjson.dumps(collection)
        return "application/json", collection


class ProfileProcessor(_RasterProcessor):
    """Ground along pipes (fids, in order) or a line, against the pipes' top from their depths."""

    def execute(self, data: dict[str, Any], outputs: dict[str, Any] | None = None) -> tuple[str, Any]:
        data = self.known_inputs(data)
        spec = self._raster(_value(data, "layer") or DEFAULT_DEM)
        fmt = self._format(data, ("json", "svg", "html"))
        step = _value(data, "step_m")
        step = DEFAULT_STEP_M if step is None else step
        if isinstance(step, bool) or not isinstance(step, int | float) or not 0.5 <= step <= 1000:
            raise InvalidProposal("step_m", "a number of metres between 0.5 and 1000")
        pipes, line = _value(data, "pipes"), _value(data, "line")
        if (pipes is None) == (line is None):
            raise InvalidProposal("inputs", "give pipes (fids) or line (a GeoJSON LineString), one of them")
        version = self._version(spec, _time(data))
        parts: list[profile.Segment | LineString]
        if pipes is not None:
            if isinstance(pipes, str):
                pipes = [p.strip() for p in pipes.split(",") if p.strip()]
            if not (isinstance(pipes, list) and all(isinstance(p, str) for p in pipes)):
                raise InvalidProposal("pipes", "a list of pipe fids")
            pipelines = rules_for(self.context.settings.layers_dir, self.context.registry).pipelines
            needed = {"depth_start_m", "depth_end_m", "utility", "diameter_mm"}
            if self.access is not None and (not needed <= self.access.get(pipelines.id, frozenset())
                                            or row_limited(self.access, pipelines.id)):
                # worded alike whether the caller may not read the layer at all or not every pipe of it
                raise NotFound("pipes: the caller may not read the pipes' depths and diameters")
            with self.context.pool.connection() as conn:
                parts = list(profile.pipe_segments(conn, pipelines, pipes))
                self.audit_reads(conn, {pipelines.id: len(parts)}, data)
            title = f"纵断面 · Longitudinal profile: {', '.join(pipes[:5])}{' …' if len(pipes) > 5 else ''}"
        else:
            geoms, _, declared = read_geojson(line, "line")
            crs = _value(data, "crs")
            if len(geoms) != 1 or not isinstance(geoms[0], LineString) or geoms[0].is_empty:
                raise InvalidProposal("line", "one GeoJSON LineString")
            stored = _lonlat(geoms, crs if isinstance(crs, str) else None, declared, "line")
            parts = [profile.line_in_metres(stored[0])]
            title = "地面纵断面 · Ground profile along a line"
        found = profile.profile(version, spec, parts, float(step))
        with self.context.pool.connection() as conn:
            self.audit_reads(conn, {spec.id: None}, data)
        if fmt == "svg":
            return "image/svg+xml", profile.chart_svg(found).encode("utf-8")
        if fmt == "html":
            return "text/html", profile.to_html(found, title)
        return "application/json", found.as_dict()


def process_metadata(registry: LayerRegistry) -> dict[str, dict[str, Any]]:
    """The raster processes' descriptions; the layer input lists the single-band rasters."""
    single = [r for r, s in registry.rasters.items() if len(s.bands) == 1]
    layer = {"title": "Raster layer", "minOccurs": 0, "maxOccurs": 1,
             "schema": {"type": "string", "enum": single, "default": DEFAULT_DEM}}
    when = {"title": "Version in force at", "description": "an RFC 3339 instant or a date (its end)",
            "minOccurs": 0, "maxOccurs": 1, "schema": {"type": "string"}}
    crs = {"title": "CRS of the coordinates", "description": "EPSG:NNNN, its OGC URI, CRS84 or GCJ-02; x first",
           "minOccurs": 0, "maxOccurs": 1, "schema": {"type": "string", "default": "OGC:CRS84"}}

    def describe(pid: str, cls: str, title: dict[str, str], description: str, inputs: dict[str, Any],
                 formats: list[str], example: dict[str, Any]) -> dict[str, Any]:
        return {"name": f"{__name__}.{cls}", "metadata": {
            "version": "1.0.0", "id": pid, "title": title, "description": {"en": description},
            "jobControlOptions": ["sync-execute", "async-execute"], "outputTransmission": ["value"],
            "keywords": ["raster", "DEM", "高程"], "links": [],
            "inputs": {**inputs, "layer": layer, "datetime": when, "crs": crs,
                       "format": {"title": "Output format", "minOccurs": 0, "maxOccurs": 1,
                                  "schema": {"type": "string", "enum": formats, "default": "json"}}},
            "outputs": {"result": {"title": "Result", "schema": {"type": "object",
                                                                 "contentMediaType": "application/json"}}},
            "example": {"inputs": example}}}

    return {
        RASTER_SAMPLE: describe(
            RASTER_SAMPLE, "SampleProcessor", {"en": "Raster values at points", "zh": "高程（栅格值）查询"},
            "The value of a raster (elevation in metres from the DEM by default) at each point: bilinear between "
            "cell centres for measured values, the cell's own value for classes (or as `method` says).",
            {"points": {"title": "Points (GeoJSON Point, MultiPoint, Feature or FeatureCollection)",
                        "minOccurs": 1, "maxOccurs": 1,
                        "schema": {"type": "object", "contentMediaType": "application/geo+json"}},
             "method": {"title": "Interpolation", "minOccurs": 0, "maxOccurs": 1,
                        "schema": {"type": "string", "enum": ["bilinear", "nearest"]}}},
            ["json", "geojson"],
            {"points": {"type": "MultiPoint", "coordinates": [[123.41, 41.75], [123.43, 41.76]]}}),
        DEM_PROFILE: describe(
            DEM_PROFILE, "ProfileProcessor", {"en": "Longitudinal profile along pipes", "zh": "管线纵断面分析"},
            "Ground elevation every `step_m` along pipes (fids, joined in the order given) or a line, and for "
            "pipes the pipe top (ground minus cover depth at each end, straight between) and the cover; as JSON, "
            "an SVG chart or an HTML page with the chart and the route.",
            {"pipes": {"title": "Pipe fids, in order along the profile", "minOccurs": 0, "maxOccurs": 1,
                       "schema": {"type": "array", "items": {"type": "string"}}},
             "line": {"title": "Or a line (GeoJSON LineString)", "minOccurs": 0, "maxOccurs": 1,
                      "schema": {"type": "object", "contentMediaType": "application/geo+json"}},
             "step_m": {"title": "Distance between points (m)", "minOccurs": 0, "maxOccurs": 1,
                        "schema": {"type": "number", "minimum": 0.5, "maximum": 1000, "default": DEFAULT_STEP_M}}},
            ["json", "svg", "html"], {"pipes": [EXAMPLE_PIPE], "step_m": 10}),
    }
