"""Row rules of the policy, compiled for the two readers: the API (a CQL2 node ANDed into the request's
filter, so it reaches SQL through the same translator, as parameters) and PostgreSQL row-level security
(a psycopg.sql predicate on a claim the database keeps per role).

Identifiers only through gis.identifiers; claim values only as parameters or via current_setting().
"""

from collections.abc import Mapping

import psycopg
import shapely
from psycopg import sql

from gis import identifiers as ids
from gis.features import crs as crs_
from gis.features.cql2 import Filter
from gis.layers import LayerRegistry
from gis.security.policy import RowRule

NOTHING: Filter = {"op": "isNull", "args": [{"property": "id"}]}  # every feature has an id: matches no row


def claim_value(claims: Mapping[str, object], rule: RowRule) -> str | None:
    value = claims.get(rule.claim)
    if isinstance(value, str | int) and not isinstance(value, bool) and str(value):
        return str(value)
    return None


def attribute_node(rule: RowRule, value: str | None) -> Filter:
    assert rule.field is not None
    if value is None:
        return NOTHING
    return {"op": "=", "args": [{"property": rule.field}, value]}


def area_statement(rule: RowRule, registry: LayerRegistry, out_crs: crs_.Crs) -> sql.Composed:
    """The union of the `within` layer's features whose field equals %(claim)s, as WKB in out_crs's axis order."""
    assert rule.within is not None
    other = registry[rule.within.layer]
    geom = crs_.to_output(out_crs, sql.SQL("ST_Union(geom)"))
    return sql.SQL("SELECT ST_AsBinary({}) FROM {} WHERE {} = %(claim)s::text").format(
        geom, ids.current_table(other), ids.column(other, rule.within.field))


async def spatial_node(conn: psycopg.AsyncConnection, rule: RowRule, registry: LayerRegistry, value: str | None,
                       out_crs: crs_.Crs) -> Filter:
    if value is None:
        return NOTHING
    cursor = await conn.execute(area_statement(rule, registry, out_crs), {"claim": value})
    row = await cursor.fetchone()
    if row is None or row[0] is None:
        return NOTHING
    area = shapely.geometry.mapping(shapely.from_wkb(bytes(row[0])))  # GeoJSON keeps every digit of the area
    return {"op": "s_intersects", "args": [{"property": "geometry"}, area]}


_AREA_VERSION = "SELECT changed_refresh_id FROM ops.layer_stats WHERE layer_id = %s"


class AreaCache:
    """The areas of spatial row rules (a station's jurisdiction), per process, keyed by the version of the layer
    the area is read from (ops.layer_stats.changed_refresh_id, which every refresh and edit moves). Each use asks
    the version (one indexed row) on the caller's connection, the primary's: a changed area takes effect on
    every node with the next request, never after a timeout. The version is read before the area, each in its
    own snapshot: an edit in between caches the new area under the old version (recomputed next time), never
    the old area under the new one."""

    def __init__(self, max_entries: int = 10_000) -> None:
        self.max_entries = max_entries
        self._areas: dict[tuple[str, str, str, str], tuple[int, Filter]] = {}

    async def node(self, conn: psycopg.AsyncConnection, rule: RowRule, registry: LayerRegistry, value: str | None,
                   out_crs: crs_.Crs) -> Filter:
        if value is None:
            return NOTHING
        assert rule.within is not None
        cursor = await conn.execute(_AREA_VERSION, (rule.within.layer,), prepare=True)
        row = await cursor.fetchone()
        version = None if row is None else int(row[0])
        key = (rule.within.layer, rule.within.field, value, out_crs.uri)
        cached = self._areas.get(key)
        if version is not None and cached is not None and cached[0] == version:
            return cached[1]
        node = await spatial_node(conn, rule, registry, value, out_crs)
        if version is not None:  # a layer never loaded has no version: nothing to key by, nothing cached
            if len(self._areas) >= self.max_entries:
                self._areas.clear()
            self._areas[key] = (version, node)
        return node


# -- row-level security in PostgreSQL ------------------------------------------------------------------

CLAIMS_TABLE = sql.Identifier("ops", "db_role_claims")


def claim_sql(claim: str) -> sql.Composed:
    """The connected role's value of a claim, from the table `gis db grant` fills (the role cannot set it)."""
    return sql.SQL("(SELECT value FROM {} WHERE role_name = current_user AND claim = {})").format(
        CLAIMS_TABLE, sql.Literal(claim))


def rls_predicate(rule: RowRule, registry: LayerRegistry, spec_id: str, history: bool = False) -> sql.Composed:
    """The USING expression of a row-level security policy for the rule on layer spec_id (or its history table)."""
    spec = registry[spec_id]
    if rule.within is None:
        assert rule.field is not None
        return sql.SQL("{} = {}").format(ids.column(spec, rule.field), claim_sql(rule.claim))
    other = registry[rule.within.layer]
    # The area is computed once per statement (an uncorrelated subquery), so the row test can use the layer's
    # spatial index; it is the same union of the claim's features the API intersects with.
    return sql.SQL("ST_Intersects({}.geom, (SELECT ST_Union(j.geom) FROM {} j WHERE j.{} = {}))").format(
        sql.Identifier(spec.history_table if history else spec.id), ids.current_table(other),
        ids.column(other, rule.within.field), claim_sql(rule.claim))
