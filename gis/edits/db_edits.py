"""Editing straight in PostGIS (QGIS): the database keeps history, validates and audits, as the API's edits do.

`gis db grant` calls `apply` after the read grants. For each layer editable through the database (its file's
`editing.maintained_by` is edits or both) it installs one trigger on the current table, fired for writes by
anyone but the tables' owner (the service account: refreshes and API edits keep history themselves), which
- validates the new version with the layer's rules: required fields, coded values, a valid, non-empty
  geometry inside the city's extent (the column's type already fixes the geometry type and SRID);
  a refused write raises check_violation naming the field, and the transaction changes nothing;
- closes the old version into the history table and stamps the new one (valid_from, row hash, version);
- writes the edit's ops.refresh_log row (the layer's version moves: ETags, tiles, caches), its ops.edits row
  (who: the login role; why: the session's `gis.edit_reason` setting, if set) and its ops.audit_log row.
The trigger function is SECURITY DEFINER: editors write the layer table and nothing else.

Each database role with an `edits` grant gets INSERT, UPDATE or DELETE on the layer's table (not where the role
has masked fields there: those edit through the API only), and where row-level security is on, a policy per
operation with its row rule as USING and WITH CHECK: it cannot touch or put a feature outside its rows.
"""

from collections.abc import Callable

import psycopg
from psycopg import sql

from gis import identifiers as ids
from gis.layers import LayerRegistry, LayerSpec
from gis.refresh import row_hash
from gis.refresh.validate import Extent
from gis.security import rows
from gis.security.policy import EditOperation, Policy

TRIGGER = sql.Identifier("gis_edit")
_PRIVILEGE = {EditOperation.create: "INSERT", EditOperation.update: "UPDATE", EditOperation.delete: "DELETE"}

_FUNCTION = """
CREATE OR REPLACE FUNCTION {function}() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, public AS $gis_edit$
DECLARE
  rid bigint := nextval('ops.refresh_log_refresh_id_seq');
  op text := CASE TG_OP WHEN 'INSERT' THEN 'create' WHEN 'UPDATE' THEN 'update' ELSE 'delete' END;
  feature text;
  previous bigint;
  delta integer := 0;
  box geometry;
  reason text := nullif(current_setting('gis.edit_reason', true), '');
  policy_role text := coalesce((SELECT substr(g.rolname, 5) FROM pg_auth_members m
      JOIN pg_roles g ON g.oid = m.roleid JOIN pg_roles u ON u.oid = m.member
      WHERE u.rolname = session_user AND g.rolname LIKE 'gis\\_%' ORDER BY g.rolname LIMIT 1), session_user);
BEGIN
  IF TG_OP <> 'DELETE' THEN
    NEW.fid := coalesce(nullif(btrim(NEW.fid), ''), md5(random()::text || clock_timestamp()::text));
{checks}
    IF NEW.geom IS NULL OR ST_IsEmpty(NEW.geom) THEN
      RAISE EXCEPTION 'geometry: no geometry' USING ERRCODE = 'check_violation';
    END IF;
    IF NOT ST_IsValid(NEW.geom) THEN
      RAISE EXCEPTION 'geometry: not valid (%)', ST_IsValidReason(NEW.geom) USING ERRCODE = 'check_violation';
    END IF;
    IF NOT ST_CoveredBy(NEW.geom, ST_MakeEnvelope({xmin}, {ymin}, {xmax}, {ymax}, 4490)) THEN
      RAISE EXCEPTION 'geometry: outside the city''s extent' USING ERRCODE = 'check_violation';
    END IF;
  END IF;
  IF TG_OP = 'UPDATE' THEN
    IF NEW.fid <> OLD.fid THEN
      RAISE EXCEPTION 'fid: a feature''s id cannot change' USING ERRCODE = 'check_violation';
    END IF;
    IF ROW({new_fields}, NEW.geom{new_validity}) IS NOT DISTINCT FROM ROW({old_fields}, OLD.geom{old_validity}) THEN
      NEW.valid_from := OLD.valid_from; NEW.valid_to := OLD.valid_to;
      NEW.row_hash := OLD.row_hash; NEW.refresh_id := OLD.refresh_id;
      RETURN NEW;  -- nothing changed: no new version
    END IF;
    IF OLD.valid_from = now() AND EXISTS (SELECT 1 FROM ops.edits e WHERE e.refresh_id = OLD.refresh_id
                                          AND e.layer_id = {layer} AND e.fid = OLD.fid) THEN
      -- changed again in the transaction that made this version (QGIS writes geometry and attributes apart):
      -- one commit, one version
      NEW.valid_from := OLD.valid_from; NEW.valid_to := OLD.valid_to; NEW.refresh_id := OLD.refresh_id;
      NEW.row_hash := {hash};
      RETURN NEW;
    END IF;
  END IF;
  IF TG_OP IN ('UPDATE', 'DELETE') THEN
    INSERT INTO {history} (fid, {fields}, geom, valid_from, valid_to, row_hash, refresh_id, closed_refresh_id)
    VALUES (OLD.fid, {old_fields}, OLD.geom, OLD.valid_from, greatest(now(), OLD.valid_from), OLD.row_hash,
            OLD.refresh_id, rid);
    feature := OLD.fid; previous := OLD.refresh_id;
  END IF;
  IF TG_OP = 'DELETE' THEN
    delta := -1;
  ELSE
    IF TG_OP = 'INSERT' THEN delta := 1; END IF;
{validity}
    NEW.row_hash := {hash};
    NEW.refresh_id := rid;
    feature := NEW.fid; box := NEW.geom;
  END IF;
  INSERT INTO ops.refresh_log (refresh_id, layer_id, status, started_at, source_path, inserted, updated, closed,
                               unchanged, rejected)
  VALUES (rid, {layer}, 'succeeded', now(), left('edit:database ' || op || ' ' || feature, 300),
          (delta = 1)::int, (TG_OP = 'UPDATE')::int, (delta = -1)::int, 0, 0);
  INSERT INTO ops.edits (refresh_id, layer_id, fid, operation, subject, role, method, reason, previous_refresh_id)
  VALUES (rid, {layer}, feature, op, 'db:' || session_user, policy_role, 'database', reason, previous);
  INSERT INTO ops.audit_log (subject, role, method, action, layer_id, query, features, status)
  VALUES ('db:' || session_user, policy_role, 'database', 'edit:' || op, {layer},
          jsonb_strip_nulls(jsonb_build_object('fid', feature, 'version', rid, 'reason', reason)), 1, 200);
  UPDATE ops.layer_stats SET row_count = row_count + delta, last_refresh_id = rid, changed_refresh_id = rid,
         changed_at = now(),
         extent = CASE WHEN box IS NULL OR extent IS NULL THEN extent ELSE ARRAY[
           least(extent[1], ST_XMin(box)), least(extent[2], ST_YMin(box)),
           greatest(extent[3], ST_XMax(box)), greatest(extent[4], ST_YMax(box))] END
   WHERE layer_id = {layer};
  IF TG_OP = 'DELETE' THEN RETURN OLD; END IF;
  RETURN NEW;
END
$gis_edit$
"""


def _checks(spec: LayerSpec) -> sql.Composable:
    """One IF per rule of the layer's fields, as validate_batch applies them to a delivery."""
    parts: list[sql.Composable] = []
    for field in spec.fields:
        column = sql.SQL("NEW.{}").format(sql.Identifier(field.name))
        if field.required:
            parts.append(sql.SQL(
                "    IF {c} IS NULL THEN RAISE EXCEPTION {m} USING ERRCODE = 'check_violation'; END IF;\n").format(
                c=column, m=sql.Literal(f"{field.name}: required, missing")))
        if field.values:
            parts.append(sql.SQL(
                "    IF {c} IS NOT NULL AND NOT ({c}::text = ANY({v}::text[])) THEN RAISE EXCEPTION {m}, {c} "
                "USING ERRCODE = 'check_violation'; END IF;\n").format(
                c=column, v=sql.Literal(list(field.values)),
                m=sql.Literal(f"{field.name}: '%' is not one of {', '.join(field.values)}")))
    return sql.SQL("").join(parts)


def _validity(spec: LayerSpec) -> tuple[sql.Composable, sql.Composable, sql.Composable]:
    """How a new version's validity is set, and the validity columns that make a version (where the source has them)."""
    if spec.has_valid_time:
        setter = sql.SQL("    NEW.valid_from := coalesce(NEW.valid_from, now());\n")
        return setter, sql.SQL(", NEW.valid_from, NEW.valid_to"), sql.SQL(", OLD.valid_from, OLD.valid_to")
    return sql.SQL("    NEW.valid_from := now(); NEW.valid_to := NULL;\n"), sql.SQL(""), sql.SQL("")


def function_name(spec: LayerSpec) -> sql.Identifier:
    return sql.Identifier(spec.domain.value, f"{spec.id}_gis_edit")


def install_trigger(conn: psycopg.Connection, spec: LayerSpec, city_extent: Extent, owner: str) -> None:
    fields = ids.field_columns(spec)
    setter, new_validity, old_validity = _validity(spec)
    xmin, ymin, xmax, ymax = (sql.Literal(float(v)) for v in city_extent)
    conn.execute(sql.SQL(_FUNCTION).format(
        function=function_name(spec), checks=_checks(spec), history=ids.history_table(spec),
        fields=sql.SQL(", ").join(fields), layer=sql.Literal(spec.id), validity=setter,
        new_fields=sql.SQL(", ").join(sql.SQL("NEW.{}").format(f) for f in fields),
        old_fields=sql.SQL(", ").join(sql.SQL("OLD.{}").format(f) for f in fields),
        new_validity=new_validity, old_validity=old_validity, xmin=xmin, ymin=ymin, xmax=xmax, ymax=ymax,
        hash=row_hash.hash_sql(spec, "new")))
    table = ids.current_table(spec)
    conn.execute(sql.SQL("DROP TRIGGER IF EXISTS {} ON {}").format(TRIGGER, table))
    # Not for the owner: refreshes and the API's edits (gis/edits/store.py) write their versions themselves.
    conn.execute(sql.SQL(
        "CREATE TRIGGER {} BEFORE INSERT OR UPDATE OR DELETE ON {} FOR EACH ROW WHEN (current_user <> {}) "
        "EXECUTE FUNCTION {}()").format(TRIGGER, table, sql.Literal(owner), function_name(spec)))


def _owner(conn: psycopg.Connection, spec: LayerSpec) -> str:
    row = conn.execute("SELECT tableowner FROM pg_tables WHERE schemaname = %s AND tablename = %s",
                       (spec.domain.value, spec.id)).fetchone()
    assert row is not None, f"no table for layer {spec.id}"
    return str(row[0])


def _row_security_on(conn: psycopg.Connection, spec: LayerSpec) -> bool:
    row = conn.execute("SELECT c.relrowsecurity FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                       "WHERE n.nspname = %s AND c.relname = %s", (spec.domain.value, spec.id)).fetchone()
    return bool(row and row[0])


def apply(conn: psycopg.Connection, policy: Policy, registry: LayerRegistry, city_extent: Extent,
          group_of: Callable[[str], str]) -> None:
    """Triggers on every editable layer, then each database role's edit grants (to its group_of(role) group)."""
    for spec in registry.values():
        if spec.editing.edits:
            install_trigger(conn, spec, city_extent, _owner(conn, spec))
    for name, role in sorted(policy.roles.items()):
        if not role.spec.database:
            continue
        group = sql.Identifier(group_of(name))
        for layer_id, operations in role.spec.edits.items():
            view = role.views[layer_id]
            if view.masked:
                continue  # a masked role edits this layer through the API only (its view is read-only)
            spec, table = view.source, ids.current_table(view.source)
            ruled = _row_security_on(conn, spec)
            rule = rows.rls_predicate(view.rows, registry, spec.id) if view.rows is not None else sql.SQL("true")
            for operation in operations:
                privilege = sql.SQL(_PRIVILEGE[operation])
                conn.execute(sql.SQL("GRANT {} ON {} TO {}").format(privilege, table, group))
                if not ruled:
                    continue
                policy_name = sql.Identifier(f"{group_of(name)}_{operation.value}")
                if operation is EditOperation.create:
                    clause = sql.SQL("WITH CHECK ({})").format(rule)
                elif operation is EditOperation.delete:
                    clause = sql.SQL("USING ({})").format(rule)
                else:
                    clause = sql.SQL("USING ({0}) WITH CHECK ({0})").format(rule)
                conn.execute(sql.SQL("CREATE POLICY {} ON {} AS PERMISSIVE FOR {} TO {} {}").format(
                    policy_name, table, privilege, group, clause))
