"""OGC API - Processes over the raster layers: `raster-sample` (values at points, e.g. elevations) and
`dem-profile` (the longitudinal profile along pipes or a line: ground against pipe top, as data, an SVG chart
or an HTML page). Run by the same pygeoapi machinery and job manager as services.processes, which registers
them; the caller's readable rasters are captured with the request like its readable layers.
"""

from datetime import datetime
from typing import Annotated, Any, ClassVar, Literal

import numpy as np
import orjson
import shapely
from pydantic import Field, WithJsonSchema, create_model, model_validator
from shapely.geometry import LineString, MultiPoint, Point

from gis import crs as crs_
from gis.analysis.proposal import read_geojson, resolve_crs
from gis.errors import InvalidInput, NotFound, SourceError
from gis.features.temporal import parse_datetime
from gis.layers import LayerRegistry, RasterSpec, RenderingKind
from gis.rasters import profile, versions
from gis.rasters.versions import RasterVersion
from gis.security.examples import EXAMPLE_PIPE
from gis.security.inference import row_limited
from services.processes.base import Process
from services.processes.inputs import GeoJSON, Names, ProcessInputs, formats
from services.processes.pygeoapi_bridge import ProcessContext

RASTER_SAMPLE = "raster-sample"
DEM_PROFILE = "dem-profile"
DEFAULT_DEM = "dem"
MAX_POINTS = 10_000
DEFAULT_STEP_M = 10.0

def _time(text: str | None) -> datetime | None:
    if text is None:
        return None
    found = parse_datetime(text)
    return found.end or found.start


def _lonlat(geoms: list[Any], crs: str | None, declared: str | None, parameter: str) -> list[Any]:
    name = resolve_crs(crs or declared or "OGC:CRS84", "crs")
    try:
        return list(crs_.to_storage_crs(np.array(geoms, dtype=object), name))
    except SourceError as exc:
        raise InvalidInput(parameter, str(exc)) from None


class RasterInputs(ProcessInputs):
    # any value: one the caller may not read (or not a name) is answered as a raster that does not exist (404)
    layer: Annotated[Any, WithJsonSchema({"type": "string", "default": DEFAULT_DEM})] = Field(
        DEFAULT_DEM, title="Raster layer")
    datetime: str | None = Field(None, title="Version in force at",
                                 description="an RFC 3339 instant or a date (its end)")
    crs: str | None = Field(None, title="CRS of the coordinates", description="EPSG:NNNN, its OGC URI, CRS84 or "
                            "GCJ-02; x first", json_schema_extra={"default": "OGC:CRS84"})


class _Raster(Process):
    keywords = ("raster", "DEM", "高程")

    @classmethod
    def inputs(cls, context: ProcessContext) -> type[ProcessInputs]:
        """`Inputs` with the layer input listing the single-band rasters."""
        single = [r for r, s in context.registry.rasters.items() if len(s.bands) == 1]
        layer = Annotated[Any, WithJsonSchema({"type": "string", "enum": single, "default": DEFAULT_DEM})]
        return create_model(f"{cls.Inputs.__name__}Described", __base__=cls.Inputs,
                            layer=(layer, Field(DEFAULT_DEM, title="Raster layer")))

    def raster(self, raster_id: Any) -> RasterSpec:
        registry: LayerRegistry = self.context.registry
        if not isinstance(raster_id, str) or raster_id not in registry.rasters or (
                self.rasters is not None and raster_id not in self.rasters):
            raise NotFound(f"layer: no raster layer '{str(raster_id)[:80]}'")
        return registry.rasters[raster_id]

    def version(self, spec: RasterSpec, at: datetime | None) -> RasterVersion:
        with self.connection() as conn:
            found = versions.version_at(conn, spec.id, at)
        if found is None:
            raise NotFound(f"raster layer '{spec.id}' has no version{' then' if at else ''} (not refreshed yet)")
        return found


class SampleInputs(RasterInputs):
    points: GeoJSON = Field(title="Points (GeoJSON Point, MultiPoint, Feature or FeatureCollection)")
    method: Literal["bilinear", "nearest"] | None = Field(None, title="Interpolation")
    format: formats("json", "geojson") = "json"  # type: ignore[valid-type]


class SampleProcessor(_Raster):
    """Values of a raster (elevation by default) at points given as GeoJSON in any supported CRS."""

    id = RASTER_SAMPLE
    title = ("Raster values at points", "高程（栅格值）查询")
    abstract = ("The value of a raster (elevation in metres from the DEM by default) at each point: bilinear between "
                "cell centres for measured values, the cell's own value for classes (or as `method` says).")
    example_inputs: ClassVar = {"points": {"type": "MultiPoint", "coordinates": [[123.41, 41.75], [123.43, 41.76]]}}
    Inputs = SampleInputs

    def run(self, inputs: SampleInputs) -> tuple[str, Any]:
        spec = self.raster(inputs.layer)
        method = inputs.method or ("nearest" if spec.rendering.kind is RenderingKind.classes else "bilinear")
        geoms, props, declared = read_geojson(inputs.points, "points")
        points: list[Point] = []
        owners: list[int] = []
        for index, geom in enumerate(geoms):
            parts = list(geom.geoms) if isinstance(geom, MultiPoint) else [geom]
            if not all(isinstance(p, Point) and not p.is_empty for p in parts):
                raise InvalidInput("points", f"feature {index} is a {geom.geom_type}; give points")
            points += [p for p in parts if isinstance(p, Point)]
            owners += [index] * len(parts)
        if len(points) > MAX_POINTS:
            raise InvalidInput("points", f"{len(points):,} points; at most {MAX_POINTS:,}")
        stored = _lonlat(points, inputs.crs, declared, "points")
        lonlat = shapely.get_coordinates(np.array(stored, dtype=object))
        version = self.version(spec, _time(inputs.datetime))
        values = profile.values_at(version, spec, lonlat, bilinear=method == "bilinear")
        features = [{"type": "Feature", "geometry": {"type": "Point", "coordinates": [round(x, 8), round(y, 8)]},
                     "properties": {**props[owner], "value": value, "unit": spec.unit, "layer": spec.id}}
                    for (x, y), value, owner in zip(lonlat.tolist(), values, owners, strict=True)]
        collection = {"type": "FeatureCollection", "features": features,
                      "layer": spec.id, "version": version.version_id, "method": method}
        with self.connection() as conn:
            self.audit_reads(conn, {spec.id: None})
        if inputs.format == "geojson":
            return "application/geo+json", orjson.dumps(collection)
        return "application/json", collection


class ProfileInputs(RasterInputs):
    pipes: Names | None = Field(None, title="Pipe fids, in order along the profile")
    line: GeoJSON | None = Field(None, title="Or a line (GeoJSON LineString)")
    step_m: float = Field(DEFAULT_STEP_M, title="Distance between points (m)", ge=0.5, le=1000)
    format: formats("json", "svg", "html") = "json"  # type: ignore[valid-type]

    @model_validator(mode="after")
    def _pipes_or_line(self) -> "ProfileInputs":
        if (self.pipes is None) == (self.line is None):
            raise InvalidInput("inputs", "give pipes (fids) or line (a GeoJSON LineString), one of them")
        return self


class ProfileProcessor(_Raster):
    """Ground along pipes (fids, in order) or a line, against the pipes' top from their depths."""

    id = DEM_PROFILE
    title = ("Longitudinal profile along pipes", "管线纵断面分析")
    abstract = ("Ground elevation every `step_m` along pipes (fids, joined in the order given) or a line, and for "
                "pipes the pipe top (ground minus cover depth at each end, straight between) and the cover; as JSON, "
                "an SVG chart or an HTML page with the chart and the route.")
    example_inputs: ClassVar = {"pipes": [EXAMPLE_PIPE], "step_m": 10}
    Inputs = ProfileInputs

    def run(self, inputs: ProfileInputs) -> tuple[str, Any]:
        spec = self.raster(inputs.layer)
        version = self.version(spec, _time(inputs.datetime))
        parts: list[profile.Segment | LineString]
        if inputs.pipes is not None:
            pipes = inputs.pipes
            pipelines = self.context.project.pipeline_rules.pipelines
            needed = {"depth_start_m", "depth_end_m", "utility", "diameter_mm"}
            if self.access is not None and (not needed <= self.access.get(pipelines.id, frozenset())
                                            or row_limited(self.access, pipelines.id)):
                # worded alike whether the caller may not read the layer at all or not every pipe of it
                raise NotFound("pipes: the caller may not read the pipes' depths and diameters")
            with self.connection() as conn:
                parts = list(profile.pipe_segments(conn, pipelines, pipes))
                self.audit_reads(conn, {pipelines.id: len(parts)})
            title = f"纵断面 · Longitudinal profile: {', '.join(pipes[:5])}{' …' if len(pipes) > 5 else ''}"
        else:
            geoms, _, declared = read_geojson(inputs.line, "line")
            if len(geoms) != 1 or not isinstance(geoms[0], LineString) or geoms[0].is_empty:
                raise InvalidInput("line", "one GeoJSON LineString")
            stored = _lonlat(geoms, inputs.crs, declared, "line")
            parts = [profile.line_in_metres(stored[0])]
            title = "地面纵断面 · Ground profile along a line"
        found = profile.profile(version, spec, parts, float(inputs.step_m))
        with self.connection() as conn:
            self.audit_reads(conn, {spec.id: None})
        if inputs.format == "svg":
            return "image/svg+xml", profile.chart_svg(found).encode("utf-8")
        if inputs.format == "html":
            return "text/html", profile.to_html(found, title)
        return "application/json", found.as_dict()


PROCESSES = (SampleProcessor, ProfileProcessor)
