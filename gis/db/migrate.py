"""Numbered SQL migrations, and the layer tables derived from the registry.

Operations tables change only through numbered files in migrations/. Layer tables are data-driven:
a new layer file creates its pair of tables, a new field adds a column; anything else (a changed
type, a dropped field) needs a numbered migration and is refused here.
"""

import re
from collections.abc import Callable
from importlib import resources

import psycopg
from psycopg import sql

from gis import identifiers as ids
from gis.db import layer_partitions
from gis.errors import ConfigError
from gis.layers import LayerRegistry, LayerSpec
from gis.refresh import row_hash

_MIGRATION_NAME = re.compile(r"^(\d{3})_[a-z0-9_]+\.sql$")


def migration_files() -> list[tuple[int, str, str]]:
    """(version, name, sql) of every packaged migration, in order."""
    found = []
    for entry in resources.files("gis.db").joinpath("migrations").iterdir():
        match = _MIGRATION_NAME.match(entry.name)
        if match:
            found.append((int(match.group(1)), entry.name, entry.read_text(encoding="utf-8")))
    return sorted(found)


def apply_migrations(conn: psycopg.Connection) -> list[str]:
    """Apply the migrations not yet recorded; returns the names applied. One transaction each."""
    conn.execute(
        "CREATE TABLE IF NOT EXISTS public.gis_schema_migrations "
        "(version integer PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())"
    )
    conn.commit()
    applied = {row[0] for row in conn.execute("SELECT version FROM public.gis_schema_migrations")}
    done = []
    for version, name, text in migration_files():
        if version in applied:
            continue
        with conn.transaction():
            conn.execute(text.encode())
            conn.execute(
                "INSERT INTO public.gis_schema_migrations (version, name) VALUES (%s, %s)", (version, name)
            )
        done.append(name)
    conn.commit()
    return done


def _field_definitions(spec: LayerSpec) -> list[sql.Composed]:
    return [sql.SQL("{} {}").format(sql.Identifier(f.name), ids.pg_type(f.type)) for f in spec.fields]


def create_layer_tables(conn: psycopg.Connection, spec: LayerSpec) -> None:
    fields = sql.SQL(", ").join(_field_definitions(spec))
    geom = ids.geometry_type(spec)
    key, partitioned = layer_partitions.table_clauses(spec, history=False)
    conn.execute(sql.SQL(
        "CREATE TABLE IF NOT EXISTS {table} (fid text NOT NULL, {fields}, geom {geom} NOT NULL, "
        "valid_from timestamptz NOT NULL DEFAULT now(), valid_to timestamptz, row_hash bytea NOT NULL, "
        "refresh_id bigint NOT NULL, PRIMARY KEY ({key})){partitioned}"
    ).format(table=ids.current_table(spec), fields=fields, geom=geom, key=key, partitioned=partitioned))
    # A history row is one closed version: the refresh that wrote it and the one that closed it.
    key, partitioned = layer_partitions.table_clauses(spec, history=True)
    conn.execute(sql.SQL(
        "CREATE TABLE IF NOT EXISTS {table} (fid text NOT NULL, {fields}, geom {geom} NOT NULL, "
        "valid_from timestamptz NOT NULL, valid_to timestamptz NOT NULL, row_hash bytea NOT NULL, "
        "refresh_id bigint NOT NULL, closed_refresh_id bigint NOT NULL, PRIMARY KEY ({key})){partitioned}"
    ).format(table=ids.history_table(spec), fields=fields, geom=geom, key=key, partitioned=partitioned))
    for history in (False, True):
        for _, statement in table_indexes(spec, history):
            conn.execute(statement)


IndexDef = tuple[sql.Identifier, sql.Composed]  # the index's schema-qualified name, its CREATE INDEX IF NOT EXISTS


def table_indexes(spec: LayerSpec, history: bool) -> list[IndexDef]:
    """The indexes every layer table of its kind gets (besides its primary key), current or history table."""
    table = ids.history_table(spec) if history else ids.current_table(spec)
    found: list[IndexDef] = []

    def index(suffix: str, definition: sql.Composable) -> None:
        found.append((ids.qualified_index_name(spec, suffix, history), sql.SQL(
            "CREATE INDEX IF NOT EXISTS {} ON {} {}").format(ids.index_name(spec, suffix, history), table, definition)))

    index("geom_idx", sql.SQL("USING gist (geom)"))
    if spec.temporal.field:
        index("time_idx", sql.SQL("({})").format(ids.column(spec, spec.temporal.field)))
    if history:
        index("valid_idx", sql.SQL("(valid_from, valid_to)"))
    if spec.geometry.value.removeprefix("Multi") != "Point":
        from gis.tiles import size_expression  # tiles leave out what is smaller than a pixel, found by this

        index("size_idx", sql.SQL("({})").format(size_expression(sql.SQL("geom"))))
    if spec.temporal.kind == "versioned":
        # As-of reads page in fid order through both tables; with the validity in the index, the versions
        # not valid at the instant are passed over in the index and never fetched (gis.features.queries).
        index("as_of_idx", sql.SQL("(fid, valid_from, valid_to)" if history else "(fid, valid_from)"))
        if not history:
            # An instant before most current rows began: the few valid then are found by their start instead.
            index("valid_idx", sql.SQL("(valid_from)"))
    return found


def declared_indexes(spec: LayerSpec, history: bool) -> list[IndexDef]:
    """The btree indexes the layer's file declares (`indexes:`) on its current table or, if asked, its history."""
    table = ids.history_table(spec) if history else ids.current_table(spec)
    statement = sql.SQL("CREATE INDEX IF NOT EXISTS {} ON {} ({})")
    return [(ids.qualified_index_name(spec, index.name, history),
             statement.format(ids.index_name(spec, index.name, history), table,
                              sql.SQL(", ").join(ids.column(spec, c) for c in index.columns)))
            for index in spec.indexes if index.history or not history]


def create_declared_indexes(conn: psycopg.Connection, spec: LayerSpec) -> None:
    for history in (False, True):
        for _, statement in declared_indexes(spec, history):
            conn.execute(statement)


def _existing_columns(conn: psycopg.Connection, schema: str, table: str) -> dict[str, str]:
    rows = conn.execute(
        "SELECT column_name, format_type(atttypid, atttypmod) FROM information_schema.columns c "
        "JOIN pg_attribute a ON a.attrelid = format('%%I.%%I', c.table_schema, c.table_name)::regclass "
        "AND a.attname = c.column_name WHERE table_schema = %s AND table_name = %s",
        (schema, table),
    ).fetchall()
    return dict(rows)


def add_new_fields(conn: psycopg.Connection, spec: LayerSpec) -> list[str]:
    """Add columns for fields declared since the tables were made; refuse type changes."""
    added = []
    for table_name, table in ((spec.id, ids.current_table(spec)), (spec.history_table, ids.history_table(spec))):
        existing = _existing_columns(conn, spec.domain.value, table_name)
        for field in spec.fields:
            wanted = ids.PG_TYPES[field.type]
            if field.name not in existing:
                conn.execute(sql.SQL("ALTER TABLE {} ADD COLUMN {} {}").format(
                    table, sql.Identifier(field.name), ids.pg_type(field.type)))
                added.append(f"{table_name}.{field.name}")
            elif existing[field.name] != wanted:
                raise ConfigError(
                    f"layer '{spec.id}': field '{field.name}' is {existing[field.name]} in the database but "
                    f"{field.type} in the layer file; changing a type needs a numbered migration"
                )
    return added


TablesHook = Callable[[psycopg.Connection], None]


def ensure_layer_tables(conn: psycopg.Connection, registry: LayerRegistry, then: TablesHook | None = None) -> None:
    """`then` runs in the same transaction: e.g. database grants, so no new column is readable before they are."""
    with conn.transaction():
        for spec in registry.values():
            new = layer_partitions.is_new(conn, spec)
            aside = layer_partitions.set_aside_plain_tables(conn, spec)  # declared partitioned since made
            create_layer_tables(conn, spec)
            add_new_fields(conn, spec)
            row_hash.ensure_hashed(conn, spec)  # versions hashed before, or before a new field, as now
            create_declared_indexes(conn, spec)
            layer_partitions.move_rows_back(conn, spec, aside)
            layer_partitions.ensure_partitions(conn, spec, backfill=new)
            from gis import tiles_generalised  # it builds on gis.tiles, which builds on this package

            tiles_generalised.ensure_table(conn, spec)
        if then is not None:
            then(conn)


def migrate(conn: psycopg.Connection, registry: LayerRegistry, after_tables: TablesHook | None = None) -> list[str]:
    applied = apply_migrations(conn)
    ensure_layer_tables(conn, registry, after_tables)
    return applied
