"""The only place a layer id or field name becomes an SQL identifier.

Names reach here from the registry (validated by pattern when the YAML was loaded) and are composed
with psycopg.sql, so nothing a request or a source file says is ever pasted into SQL.
"""

from psycopg import sql

from gis.layers import RESERVED_COLUMNS, FieldType, LayerSpec

PG_TYPES: dict[FieldType, str] = {
    FieldType.text: "text",
    FieldType.integer: "integer",
    FieldType.bigint: "bigint",
    FieldType.real: "double precision",
    FieldType.boolean: "boolean",
    FieldType.date: "date",
    FieldType.timestamp: "timestamp with time zone",
}


def current_table(spec: LayerSpec) -> sql.Identifier:
    return sql.Identifier(spec.domain.value, spec.id)


def history_table(spec: LayerSpec) -> sql.Identifier:
    return sql.Identifier(spec.domain.value, spec.history_table)


def staging_table(spec: LayerSpec) -> sql.Identifier:
    return sql.Identifier("staging", spec.id)


def column(spec: LayerSpec, name: str) -> sql.Identifier:
    """A column of the layer's tables; anything the layer does not have is refused."""
    if name not in RESERVED_COLUMNS and spec.field(name) is None:
        raise KeyError(f"layer '{spec.id}' has no column '{name}'")
    return sql.Identifier(name)


def field_columns(spec: LayerSpec) -> list[sql.Identifier]:
    return [sql.Identifier(name) for name in spec.field_names]


def pg_type(field_type: FieldType) -> sql.SQL:
    return sql.SQL(PG_TYPES[field_type])


def geometry_type(spec: LayerSpec) -> sql.Composed:
    """geometry(<Type>, <srid>) from the layer's enumerated type and integer SRID."""
    return sql.SQL("geometry({}, {})").format(sql.SQL(spec.geometry.value), sql.Literal(int(spec.srid)))


def index_name(spec: LayerSpec, suffix: str, history: bool = False) -> sql.Identifier:
    table = spec.history_table if history else spec.id
    return sql.Identifier(f"{table}_{suffix}")


def qualified_index_name(spec: LayerSpec, suffix: str, history: bool = False) -> sql.Identifier:
    """The same index, schema-qualified, for DROP INDEX."""
    table = spec.history_table if history else spec.id
    return sql.Identifier(spec.domain.value, f"{table}_{suffix}")


def generalised_table(spec: LayerSpec) -> sql.Identifier:
    """The layer's pre-built generalised copy for tiles (gis.tiles_generalised), in the service's own schema."""
    return sql.Identifier("tiles", spec.id)
