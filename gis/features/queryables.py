"""What a client may filter, sort and select on, per layer: the declared fields plus id, geometry and validity.

The same table answers `/queryables` (as JSON Schema), checks CQL2 property names and `sortby` keys,
and gives the SQL column each name maps to.
"""

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from psycopg import sql

from gis import identifiers as ids
from gis.layers import FieldSpec, FieldType, GeometryType, LayerSpec

KIND_OF = {
    FieldType.text: "text",
    FieldType.integer: "integer",
    FieldType.bigint: "integer",
    FieldType.real: "number",
    FieldType.boolean: "boolean",
    FieldType.date: "date",
    FieldType.timestamp: "timestamp",
}
# Names that are not declared fields but can be queried (a declared field of the same name wins).
ID, GEOMETRY = "id", "geometry"
VALIDITY = ("valid_from", "valid_to")


@dataclass(frozen=True)
class Queryable:
    name: str
    column: str
    kind: str  # text, integer, number, boolean, date, timestamp, geometry
    field: FieldSpec | None = None

    @property
    def identifier(self) -> sql.Identifier:
        return sql.Identifier(self.column)


def queryables(spec: LayerSpec) -> Mapping[str, Queryable]:
    """name -> Queryable, for one layer (built once, by the layer: LayerSpec.queryables)."""
    return spec.queryables


def build_queryables(spec: LayerSpec) -> dict[str, Queryable]:
    found: dict[str, Queryable] = {}
    for field in spec.fields:
        ids.column(spec, field.name)  # the registry's check: a name that reaches SQL is a declared column
        found[field.name] = Queryable(field.name, field.name, KIND_OF[field.type], field)
    found.setdefault(ID, Queryable(ID, "fid", "text"))
    found.setdefault(GEOMETRY, Queryable(GEOMETRY, "geom", "geometry"))
    for name in VALIDITY:
        found.setdefault(name, Queryable(name, name, "timestamp"))
    return found


def response_properties(spec: LayerSpec) -> tuple[str, ...]:
    """The property names of a response feature, in order: declared fields, then validity."""
    return (*spec.field_names, *VALIDITY)


_JSON_TYPES = {
    "text": {"type": "string"},
    "integer": {"type": "integer"},
    "number": {"type": "number"},
    "boolean": {"type": "boolean"},
    "date": {"type": "string", "format": "date"},
    "timestamp": {"type": "string", "format": "date-time"},
}
_GEOMETRY_FORMATS = {
    GeometryType.Point: "geometry-point",
    GeometryType.LineString: "geometry-linestring",
    GeometryType.Polygon: "geometry-polygon",
    GeometryType.MultiPoint: "geometry-multipoint",
    GeometryType.MultiLineString: "geometry-multilinestring",
    GeometryType.MultiPolygon: "geometry-multipolygon",
}


def json_schema(spec: LayerSpec, schema_id: str) -> dict[str, Any]:
    """The queryables as JSON Schema (OGC API Features Part 3)."""
    properties: dict[str, Any] = {}
    for name, q in queryables(spec).items():
        if q.kind == "geometry":
            entry: dict[str, Any] = {"format": _GEOMETRY_FORMATS[spec.geometry], "x-ogc-role": "primary-geometry"}
        else:
            entry = dict(_JSON_TYPES[q.kind])
        if q.field is not None:
            if q.field.title:
                entry["title"] = q.field.title
            if q.field.values:
                entry["enum"] = list(q.field.values)
            if q.field.unit:
                entry["x-ogc-unit"] = q.field.unit
        elif name == ID:
            entry.update(title="feature id", **{"x-ogc-role": "id"})
        elif name == "valid_from":
            entry.update(title="valid from (inclusive)")
            if not spec.temporal.field:
                entry["x-ogc-role"] = "primary-instant"
        elif name == "valid_to":
            entry.update(title="valid until (exclusive); null while valid")
        if spec.temporal.field == name:
            entry["x-ogc-role"] = "primary-instant"
        properties[name] = entry
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": schema_id,
        "type": "object",
        "title": spec.title.en,
        "description": spec.description,
        "properties": properties,
        "additionalProperties": False,
    }
