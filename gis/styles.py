"""Publish every layer's style from styles/ into public.layer_styles, QGIS's own table of default styles.

A PostGIS layer opened in QGIS takes the row whose f_table_catalog equals the database name of its URI
and whose schema, table and geometry column match, preferring `useasdefault` rows, then the newest.
We keep one row per layer, keyed by its table and our style name (the layer id), with `type` NULL so
both URI forms (with and without a geometry type) find it, and make it the only default of its table.

The catalog is the one thing a copied database gets wrong: a clone made with CREATE DATABASE ... TEMPLATE
(or a restored dump under another name) keeps the old name in f_table_catalog, and QGIS then finds no
style. Publishing therefore writes current_database() and repairs such rows in place; publish again
after cloning. Publishing is idempotent: a row is rewritten only when something in it differs.
"""

from dataclasses import dataclass
from pathlib import Path

import psycopg

from gis.errors import ConfigError
from gis.layers import LayerRegistry, LayerSpec

GEOMETRY_COLUMN = "geom"

# Writers wait for each other (no duplicate inserts from two publishers); QGIS reading styles does not wait.
_LOCK = "LOCK TABLE public.layer_styles IN SHARE ROW EXCLUSIVE MODE"

_UPDATE = """
UPDATE public.layer_styles
   SET f_table_catalog = current_database(),
       styleqml = XMLPARSE(DOCUMENT %(qml)s::text), stylesld = XMLPARSE(DOCUMENT %(sld)s::text),
       description = %(description)s, useasdefault = true, type = NULL, update_time = LOCALTIMESTAMP
 WHERE f_table_schema = %(schema)s AND f_table_name = %(table)s AND f_geometry_column = %(geom)s
   AND stylename = %(stylename)s
   AND (f_table_catalog IS DISTINCT FROM current_database()
        OR styleqml::text IS DISTINCT FROM XMLPARSE(DOCUMENT %(qml)s::text)::text
        OR stylesld::text IS DISTINCT FROM XMLPARSE(DOCUMENT %(sld)s::text)::text
        OR description IS DISTINCT FROM %(description)s
        OR useasdefault IS NOT TRUE
        OR type IS NOT NULL)
"""

_EXISTS = """
SELECT 1 FROM public.layer_styles
 WHERE f_table_schema = %(schema)s AND f_table_name = %(table)s AND f_geometry_column = %(geom)s
   AND stylename = %(stylename)s
"""

_INSERT = """
INSERT INTO public.layer_styles
       (f_table_catalog, f_table_schema, f_table_name, f_geometry_column, stylename,
        styleqml, stylesld, useasdefault, description, type, update_time)
VALUES (current_database(), %(schema)s, %(table)s, %(geom)s, %(stylename)s,
        XMLPARSE(DOCUMENT %(qml)s::text), XMLPARSE(DOCUMENT %(sld)s::text), true, %(description)s, NULL,
        LOCALTIMESTAMP)
"""

# Another default for the same table (saved from QGIS, say) would compete with ours: it stays, not as default.
_DEMOTE_OTHERS = """
UPDATE public.layer_styles SET useasdefault = false
 WHERE f_table_schema = %(schema)s AND f_table_name = %(table)s AND f_geometry_column = %(geom)s
   AND stylename IS DISTINCT FROM %(stylename)s AND useasdefault
"""


@dataclass(frozen=True)
class StyleFiles:
    qml: str
    sld: str


def style_files(spec: LayerSpec, styles_dir: Path) -> StyleFiles:
    """The layer's QML and the SLD beside it, as text."""
    qml_path = styles_dir / spec.style
    sld_path = qml_path.with_suffix(".sld")
    try:
        return StyleFiles(qml_path.read_text(encoding="utf-8"), sld_path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"layer '{spec.id}': cannot read its style: {exc}") from exc


def _params(spec: LayerSpec, files: StyleFiles) -> dict[str, str]:
    return {
        "schema": spec.domain.value,
        "table": spec.id,
        "geom": GEOMETRY_COLUMN,
        "stylename": spec.id,
        "qml": files.qml,
        "sld": files.sld,
        "description": f"{spec.title.zh} {spec.title.en}: default style published from styles/{spec.style}",
    }


def publish_layer_style(conn: psycopg.Connection, spec: LayerSpec, files: StyleFiles) -> int:
    """Write one layer's default style; the number of rows changed (0 when it was already published)."""
    params = _params(spec, files)
    with conn.cursor() as cur:
        cur.execute(_UPDATE, params)
        changed = cur.rowcount
        if changed == 0 and cur.execute(_EXISTS, params).fetchone() is None:
            cur.execute(_INSERT, params)
            changed = cur.rowcount
        cur.execute(_DEMOTE_OTHERS, params)
        return changed + cur.rowcount


def publish_styles(conn: psycopg.Connection, registry: LayerRegistry, styles_dir: Path) -> int:
    """Publish every layer's style as its table's default, in one transaction; how many rows changed."""
    files = {spec.id: style_files(spec, styles_dir) for spec in registry.specs()}
    with conn.transaction():
        conn.execute(_LOCK)
        return sum(publish_layer_style(conn, spec, files[spec.id]) for spec in registry.specs())
