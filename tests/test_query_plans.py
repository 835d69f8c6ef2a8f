"""What the database reads for a page, from its own plans (EXPLAIN ANALYZE), never from timings.

The pipelines of a clone are given a realistic history: every segment has an older version, half of
them changed again later, and a tenth were removed. An as-of page is then compared with a page of "now".
"""

import re
from collections.abc import Iterator
from typing import Any

import orjson
import psycopg
import pytest
from psycopg import sql

from gis.db.routing import row_statement
from gis.features.params import encode_cursor, parse_items_query
from gis.features.queries import items_statement
from gis.layers import LayerRegistry, LayerSpec

LAYER_TABLES = ("pipelines", "pipelines_history")
# The instants of the history made below: v1 [A, B), v2 [B, C); half the segments changed at C.
A, B, C = "2025-01-01T00:00:00Z", "2025-06-01T00:00:00Z", "2026-01-01T00:00:00Z"

FIELDS = sql.SQL(", ").join(sql.Identifier(n) for n in (
    "utility", "material", "diameter_mm", "pressure_class", "depth_start_m", "depth_end_m", "install_year", "owner",
    "status", "from_node", "to_node"))
COPY_TO_HISTORY = sql.SQL(
    "INSERT INTO pipeline.pipelines_history (fid, {f}, geom, valid_from, valid_to, row_hash, refresh_id, "
    "closed_refresh_id) SELECT fid, {f}, geom, %(start)s, %(end)s, row_hash, %(rid)s, %(rid)s + 1 "
    "FROM pipeline.pipelines WHERE md5(fid) < %(below)s").format(f=FIELDS)


def _database(server_url: str, name: str, template: str | None = None) -> None:
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        if template is not None:
            conn.execute(sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(sql.Identifier(name),
                                                                          sql.Identifier(template)))


@pytest.fixture(scope="module")
def history_url(server_url: str, template_db: str) -> Iterator[str]:
    name = "gis_test_query_plans"
    _database(server_url, name, template_db)
    url = psycopg.conninfo.make_conninfo(server_url, dbname=name)
    with psycopg.connect(url, autocommit=True) as conn:
        with conn.transaction():
            # Ten times the sample's segments (copies with their own fids), so the planner weighs a
            # layer of some size, as it would the city's (with a few thousand rows it reads them all).
            conn.execute(sql.SQL(
                "INSERT INTO pipeline.pipelines (fid, {f}, geom, valid_from, valid_to, row_hash, refresh_id) "
                "SELECT fid || '-' || k, {f}, geom, valid_from, valid_to, row_hash, refresh_id "
                "FROM pipeline.pipelines, generate_series(1, 9) k").format(f=FIELDS))
            # v1 of every segment [A, B); half of them a v2 [B, C) and a current version from C (a tenth of
            # them, removed at C, have none); the other half current since B.
            conn.execute(COPY_TO_HISTORY, {"start": A, "end": B, "rid": 1, "below": "g"})
            conn.execute(COPY_TO_HISTORY, {"start": B, "end": C, "rid": 2, "below": "8"})
            conn.execute("DELETE FROM pipeline.pipelines WHERE md5(fid) < '2'")
            conn.execute("UPDATE pipeline.pipelines SET valid_from = CASE WHEN md5(fid) < '8' THEN %(c)s::timestamptz "
                         "ELSE %(b)s::timestamptz END, material = CASE WHEN md5(fid) < '8' THEN 'PE-new' "
                         "ELSE material END", {"b": B, "c": C})
        conn.execute("VACUUM ANALYZE pipeline.pipelines")
        conn.execute("VACUUM ANALYZE pipeline.pipelines_history")
    yield url
    _database(server_url, name)


@pytest.fixture(scope="module")
def conn(history_url: str) -> Iterator[psycopg.Connection]:
    with psycopg.connect(history_url, autocommit=True) as c:
        yield c


@pytest.fixture(scope="module")
def pipelines(registry: LayerRegistry) -> LayerSpec:
    return registry["pipelines"]


def _scans(node: dict[str, Any]) -> Iterator[dict[str, Any]]:
    if "Relation Name" in node:
        yield node
    for child in node.get("Plans", ()):
        yield from _scans(child)


def rows_read(conn: psycopg.Connection, spec: LayerSpec, params: dict[str, str], served: bool = False) -> int:
    """Rows the statement fetched from the layer's two tables: those returned by each scan and those its
    filters threw away (rows an index condition passed over are never fetched). `served`: the statement as the
    service sends it, inside the read that also answers the layer's versions (gis.db.routing.run_row)."""
    statement = items_statement(spec, parse_items_query(spec, params))
    query = statement.query if isinstance(statement.query, bytes) else statement.query.as_bytes(conn)
    values: dict[str, object] = dict(statement.params)
    if served:
        query, values["gis_read_layers"] = row_statement(query, False), [spec.id]
    plan = conn.execute(b"EXPLAIN (ANALYZE, FORMAT JSON) " + query, values).fetchone()[0][0]["Plan"]
    total = 0
    for scan in _scans(plan):
        if scan["Relation Name"] in LAYER_TABLES:
            fetched = scan["Actual Rows"] + scan.get("Rows Removed by Filter", 0) + scan.get(
                "Rows Removed by Index Recheck", 0)
            total += fetched * scan["Actual Loops"]
    return total


def features(conn: psycopg.Connection, spec: LayerSpec, params: dict[str, str]) -> list[dict[str, Any]]:
    """Every feature the service's statements answer with, page after page."""
    found: list[dict[str, Any]] = []
    page: dict[str, str] = {}
    while True:
        statement = items_statement(spec, parse_items_query(spec, {"limit": "10000", **params, **page}))
        text, _returned, more, last = conn.execute(statement.query, statement.params).fetchone()[:4]
        found += orjson.loads(b"[" + bytes(text) + b"]")
        if not more:
            return found
        page = {"cursor": encode_cursor(last)}


def ids(conn: psycopg.Connection, spec: LayerSpec, params: dict[str, str]) -> list[str]:
    return [f["id"] for f in features(conn, spec, params)]


@pytest.fixture(scope="module")
def cursor(conn: psycopg.Connection) -> str:
    """A cursor half-way through the layer: later pages count nothing, so they compare the pages alone."""
    fids = [r[0] for r in conn.execute("SELECT fid FROM pipeline.pipelines ORDER BY fid").fetchall()]
    return encode_cursor(fids[len(fids) // 2])


def test_as_of_page_reads_no_more_rows_than_a_page_of_now(conn: psycopg.Connection, pipelines: LayerSpec,
                                                          cursor: str) -> None:
    # After the last change every current version is valid; the removed segments' versions are history.
    now = rows_read(conn, pipelines, {"limit": "100", "cursor": cursor})
    then = rows_read(conn, pipelines, {"limit": "100", "cursor": cursor, "datetime": "2026-03-01T00:00:00Z"})
    # The page of now reads its 100 rows and one more (is there a next page?); the as-of page merges two
    # tables in fid order and holds the other table's next row when the page is full: one row at most more.
    assert now == 101 and then <= now + 1


@pytest.mark.parametrize("params", [
    {"limit": "100"}, {"limit": "100", "datetime": "2025-08-01T00:00:00Z"},
    {"limit": "100", "filter": "utility = 'sewer'"},
], ids=["now", "as-of", "filter"])
def test_the_read_that_reports_versions_reads_no_more_rows_than_the_statement(
        conn: psycopg.Connection, pipelines: LayerSpec, cursor: str, params: dict[str, str]) -> None:
    # One statement answers the versions and the page: the page's own plan is kept (nothing outside it reaches in).
    alone = rows_read(conn, pipelines, {**params, "cursor": cursor})
    assert rows_read(conn, pipelines, {**params, "cursor": cursor}, served=True) == alone


@pytest.mark.parametrize("when", ["2025-02-01T00:00:00Z", "2025-08-01T00:00:00Z"])
def test_as_of_page_inside_the_history_reads_a_page(conn: psycopg.Connection, pipelines: LayerSpec, cursor: str,
                                                    when: str) -> None:
    # Half the current versions began after these instants: the planner may pass over them on the primary
    # key (fetching them) rather than in the validity index, but never reads more than the page's fid range.
    now = rows_read(conn, pipelines, {"limit": "100", "cursor": cursor})
    then = rows_read(conn, pipelines, {"limit": "100", "cursor": cursor, "datetime": when})
    assert then <= 2 * now


def test_as_of_interval_page_reads_a_page(conn: psycopg.Connection, pipelines: LayerSpec, cursor: str) -> None:
    # Each history version in the page's range is checked for a later one by an index probe, not a scan.
    now = rows_read(conn, pipelines, {"limit": "100", "cursor": cursor})
    then = rows_read(conn, pipelines, {"limit": "100", "cursor": cursor, "datetime": f"{A}/{C}"})
    assert then <= 5 * now  # the page's own rows, the history rows beside them and one probe row each


def test_as_of_first_page_counts_a_bounded_number_of_rows(conn: psycopg.Connection, pipelines: LayerSpec) -> None:
    # numberMatched of an as-of page is bounded like a filter's: its count stops after 1,001 rows, so the
    # first page reads a number of rows that does not grow with the layer (a tenth of this one).
    read = rows_read(conn, pipelines, {"limit": "100", "datetime": "2025-08-01T00:00:00Z"})
    assert read <= 2 * (101 + 1001)


AS_OF = ("SELECT fid FROM pipeline.pipelines WHERE valid_from <= %(t)s AND (valid_to IS NULL OR valid_to > %(t)s) "
         "UNION ALL SELECT fid FROM pipeline.pipelines_history WHERE valid_from <= %(t)s AND valid_to > %(t)s")


@pytest.mark.parametrize("when", ["2025-02-01T00:00:00Z", "2025-08-01T00:00:00Z", "2026-03-01T00:00:00Z",
                                  "2024-01-01T00:00:00Z"])
def test_as_of_instant_gives_each_version_valid_then(conn: psycopg.Connection, pipelines: LayerSpec,
                                                     when: str) -> None:
    want = sorted(r[0] for r in conn.execute(AS_OF, {"t": when}).fetchall())
    assert ids(conn, pipelines, {"datetime": when}) == want


def test_interval_gives_each_segment_once_in_its_latest_version(conn: psycopg.Connection,
                                                                pipelines: LayerSpec) -> None:
    # Over [A, C] a changed segment had three versions and a removed one two: each comes once, as its last.
    got = features(conn, pipelines, {"datetime": "2025-03-01T00:00:00Z/2026-02-01T00:00:00Z"})
    removed = {r[0] for r in conn.execute("SELECT fid FROM pipeline.pipelines_history WHERE refresh_id = 2 "
                                          "EXCEPT SELECT fid FROM pipeline.pipelines").fetchall()}
    changed = {r[0] for r in conn.execute("SELECT fid FROM pipeline.pipelines WHERE material = 'PE-new'").fetchall()}
    everything = {r[0] for r in conn.execute("SELECT fid FROM pipeline.pipelines_history").fetchall()}
    assert len(got) == len({f["id"] for f in got}) and {f["id"] for f in got} == everything
    assert removed and changed
    assert all(f["properties"]["material"] == "PE-new" for f in got if f["id"] in changed)
    assert not any(f["properties"]["material"] == "PE-new" for f in got if f["id"] in removed)


def test_interval_with_a_filter_gives_the_latest_version_passing_it(conn: psycopg.Connection,
                                                                     pipelines: LayerSpec) -> None:
    # The filter picks versions: the changed segments' older versions (before PE-new) still match theirs.
    changed = conn.execute("SELECT fid, material FROM pipeline.pipelines_history WHERE refresh_id = 2 "
                           "AND fid IN (SELECT fid FROM pipeline.pipelines WHERE material = 'PE-new') "
                           "AND material IS NOT NULL ORDER BY fid LIMIT 1").fetchone()
    assert changed is not None
    fid, material = changed
    got = features(conn, pipelines, {"datetime": f"{A}/{C}", "filter": f"id = '{fid}' AND material = '{material}'"})
    assert [(f["id"], f["properties"]["valid_to"][:10]) for f in got] == [(fid, C[:10])]


# -- filtered pages: the indexes the layer file declares ---------------------------------------------------

def plan_scans(conn: psycopg.Connection, spec: LayerSpec, params: dict[str, str]) -> list[dict[str, Any]]:
    """Every scan of the layer's current table in the statement's executed plan."""
    statement = items_statement(spec, parse_items_query(spec, params))
    query = statement.query if isinstance(statement.query, bytes) else statement.query.as_bytes(conn)
    plan = conn.execute(b"EXPLAIN (ANALYZE, FORMAT JSON) " + query, statement.params).fetchone()[0][0]["Plan"]
    return [s for s in _scans(plan) if s["Relation Name"] == "pipelines"]


@pytest.mark.parametrize(("name", "cql2", "index"), [
    ("one coded value", "utility = 'sewer'", "pipelines_utility_idx"),
    ("a range and a coded value", "diameter_mm > 500 AND material = 'HDPE'", "pipelines_material_idx"),
])
def test_filtered_first_page_is_read_from_the_declared_index(conn: psycopg.Connection, pipelines: LayerSpec,
                                                             name: str, cql2: str, index: str) -> None:
    scans = plan_scans(conn, pipelines, {"limit": "100", "filter": cql2})
    # The page and its bounded count both: no sequential scan, no other index.
    assert len(scans) == 2 and {(s["Node Type"], s.get("Index Name")) for s in scans} <= {
        ("Index Scan", index), ("Index Only Scan", index)}, name
    page = [s for s in scans if s["Node Type"] == "Index Scan"]
    assert len(page) == 1 and page[0]["Actual Rows"] + page[0].get("Rows Removed by Filter", 0) <= 101


@pytest.mark.parametrize("cql2", ["utility = 'sewer'", "diameter_mm > 500 AND material = 'HDPE'"])
def test_bounded_count_never_reads_the_table(conn: psycopg.Connection, pipelines: LayerSpec, cql2: str) -> None:
    scans = plan_scans(conn, pipelines, {"limit": "100", "filter": cql2})
    counts = [s for s in scans if s["Node Type"] == "Index Only Scan"]
    assert len(counts) == 1 and counts[0]["Heap Fetches"] == 0 and counts[0]["Actual Rows"] <= 1001


def test_declared_indexes_are_made_by_migrate(conn: psycopg.Connection, registry: LayerRegistry) -> None:
    found = {r[0] for r in conn.execute("SELECT indexname FROM pg_indexes WHERE schemaname = 'pipeline'").fetchall()}
    declared = {f"{spec.id}_{index.name}" for spec in registry.values() if spec.domain == "pipeline"
                for index in spec.indexes}
    assert {"pipelines_utility_idx", "pipelines_from_node", "sensor_readings_sensor_idx"} <= declared <= found


def generic_plan_scans(conn: psycopg.Connection, spec: LayerSpec, params: dict[str, str]) -> list[dict[str, Any]]:
    """As plan_scans, for the plan the service runs after a few requests: the driver prepares each statement
    (prepare=True), and PostgreSQL then plans it once for any values (a generic plan), the literals unknown."""
    statement = items_statement(spec, parse_items_query(spec, params))
    assert isinstance(statement.query, bytes)
    names: list[str] = []

    def numbered(match: re.Match[bytes]) -> bytes:
        name = match.group(1).decode()
        if name not in names:
            names.append(name)
        return b"$%d" % (names.index(name) + 1)

    text = re.sub(rb"%\((\w+)\)s", numbered, statement.query)
    conn.execute("SET plan_cache_mode = force_generic_plan")
    conn.execute(b"PREPARE gis_generic AS " + text)
    try:
        values = [statement.params[n] for n in names]
        arguments = ", ".join(["%s"] * len(values)).encode()
        # the values written into EXECUTE's arguments (PostgreSQL types them after the prepared statement's)
        plan = psycopg.ClientCursor(conn).execute(
            b"EXPLAIN (ANALYZE, FORMAT JSON) EXECUTE gis_generic(" + arguments + b")", values).fetchone()[0][0]["Plan"]
    finally:
        conn.execute("DEALLOCATE gis_generic")
        conn.execute("RESET plan_cache_mode")
    return [s for s in _scans(plan) if s["Relation Name"] == "pipelines"]


@pytest.mark.parametrize(("cql2", "index"), [
    ("utility = 'sewer'", "pipelines_utility_idx"),
    ("diameter_mm > 500 AND material = 'HDPE'", "pipelines_material_idx"),
])
def test_the_prepared_filtered_page_keeps_to_the_index_for_any_value(conn: psycopg.Connection,
                                                                    pipelines: LayerSpec, cql2: str,
                                                                    index: str) -> None:
    # The plan made once for every value of the filter's literals reads the same index as the plan for these
    # values: the page reads its rows and one more, the count no row of the table (the visibility map answers).
    scans = generic_plan_scans(conn, pipelines, {"limit": "100", "filter": cql2})
    assert {(s["Node Type"], s.get("Index Name")) for s in scans} <= {("Index Scan", index),
                                                                      ("Index Only Scan", index)}
    page = [s for s in scans if s["Node Type"] == "Index Scan"]
    counts = [s for s in scans if s["Node Type"] == "Index Only Scan"]
    assert len(page) == 1 and page[0]["Actual Rows"] + page[0].get("Rows Removed by Filter", 0) <= 101
    assert len(counts) == 1 and counts[0]["Heap Fetches"] == 0 and counts[0]["Actual Rows"] <= 1001
