"""`datetime` and history: versioned layers as they were or as a plan says they will be; event layers by time."""

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from datetime import UTC, datetime, timedelta

import httpx
import psycopg
import pytest
from api_models import FeatureCollection, error, features
from psycopg import sql


def fids(db: psycopg.Connection, query: str, *params: object) -> set[str]:
    return {r[0] for r in db.execute(query, params).fetchall()}  # type: ignore[arg-type]


def all_ids(client: httpx.Client, layer: str, **params: str) -> list[str]:
    page = features(client.get(f"/collections/{layer}/items", params={"limit": "10000", **params}))
    assert page.link("next") is None
    return [f.id for f in page.features]


AS_OF = ("SELECT fid FROM planning.land_use_plan WHERE valid_from <= %(t)s AND (valid_to IS NULL OR valid_to > %(t)s) "
         "UNION ALL SELECT fid FROM planning.land_use_plan_history WHERE valid_from <= %(t)s AND valid_to > %(t)s")


def test_plan_now_leaves_out_parcels_not_yet_in_force(client: httpx.Client, db: psycopg.Connection) -> None:
    now = datetime.now(UTC)
    want = {r[0] for r in db.execute(AS_OF, {"t": now}).fetchall()}
    total = fids(db, "SELECT fid FROM planning.land_use_plan")
    assert set(all_ids(client, "land_use_plan")) == want and want < total


def test_plan_in_2030_is_the_future_plan(client: httpx.Client, db: psycopg.Connection) -> None:
    t = datetime(2030, 6, 1, 23, 59, 59, 999999, tzinfo=UTC) + timedelta(hours=-8)  # the end of that local day
    want = {r[0] for r in db.execute(AS_OF, {"t": t}).fetchall()}
    got = set(all_ids(client, "land_use_plan", datetime="2030-06-01"))
    future = fids(db, "SELECT fid FROM planning.land_use_plan WHERE valid_from > now()")
    assert got == want and future <= got


def test_plan_in_2030_leaves_out_superseded_parcels(client: httpx.Client, db: psycopg.Connection) -> None:
    superseded = fids(db, "SELECT fid FROM planning.land_use_plan WHERE valid_to < '2030-01-01'")
    assert superseded and not superseded & set(all_ids(client, "land_use_plan", datetime="2030-06-01"))


def test_plan_instant_timestamp(client: httpx.Client, db: psycopg.Connection) -> None:
    t = datetime(2024, 3, 1, 12, tzinfo=UTC)
    want = {r[0] for r in db.execute(AS_OF, {"t": t}).fetchall()}
    assert set(all_ids(client, "land_use_plan", datetime="2024-03-01T12:00:00Z")) == want


def test_plan_instant_without_offset_is_city_time(client: httpx.Client, db: psycopg.Connection) -> None:
    t = datetime(2024, 3, 1, 12, tzinfo=UTC)  # 20:00 in Shenyang (UTC+8)
    want = {r[0] for r in db.execute(AS_OF, {"t": t}).fetchall()}
    assert set(all_ids(client, "land_use_plan", datetime="2024-03-01T20:00:00")) == want


def test_plan_interval_returns_each_parcel_once(client: httpx.Client, db: psycopg.Connection) -> None:
    ids = all_ids(client, "land_use_plan", datetime="2020-01-01/2030-01-01")
    want = fids(db, "SELECT fid FROM planning.land_use_plan WHERE valid_from <= '2030-01-01T23:59:59.999999+08' "
                "AND (valid_to IS NULL OR valid_to > '2020-01-01T00:00+08')")
    assert len(ids) == len(set(ids)) and set(ids) == want


def test_open_interval_start(client: httpx.Client, db: psycopg.Connection) -> None:
    want = fids(db, "SELECT fid FROM planning.land_use_plan WHERE valid_from <= '2019-12-31T23:59:59.999999+08'")
    assert set(all_ids(client, "land_use_plan", datetime="../2019-12-31")) == want


def test_versioned_layer_before_it_was_loaded_is_empty(client: httpx.Client) -> None:
    assert all_ids(client, "roads", datetime="2001-01-01") == []


def test_versioned_layer_now_reads_the_current_table(client: httpx.Client, db: psycopg.Connection) -> None:
    page = features(client.get("/collections/roads/items", params={"limit": 1}))
    assert page.numberMatched == len(fids(db, "SELECT fid FROM base.roads"))


def test_event_layer_filters_on_its_event_time(client: httpx.Client, db: psycopg.Connection) -> None:
    want = fids(db, "SELECT fid FROM policing.incidents WHERE occurred_at >= '2026-03-01T00:00+08' "
                "AND occurred_at <= '2026-03-31T23:59:59.999999+08'")
    assert want and set(all_ids(client, "incidents", datetime="2026-03-01/2026-03-31")) == want


def test_event_layer_date_instant_is_the_whole_local_day(client: httpx.Client, db: psycopg.Connection) -> None:
    want = fids(db, "SELECT fid FROM environment.observations WHERE observed_at >= '2026-05-05T00:00+08' "
                "AND observed_at < '2026-05-06T00:00+08'")
    assert want and set(all_ids(client, "observations", datetime="2026-05-05")) == want


def test_event_layer_open_interval_end(client: httpx.Client, db: psycopg.Connection) -> None:
    want = fids(db, "SELECT fid FROM policing.incidents WHERE occurred_at >= '2026-10-01T00:00:00Z'")
    assert set(all_ids(client, "incidents", datetime="2026-10-01T00:00:00Z/..")) == want


def test_datetime_with_cursor_paging_covers_the_interval(client: httpx.Client, db: psycopg.Connection) -> None:
    want = fids(db, "SELECT fid FROM policing.incidents WHERE occurred_at >= '2026-01-01T00:00+08' "
                "AND occurred_at < '2026-07-01T00:00+08'")
    ids: list[str] = []
    response = client.get("/collections/incidents/items", params={"datetime": "2026-01-01/2026-06-30", "limit": 100})
    while True:
        page = features(response)
        ids += [f.id for f in page.features]
        if page.link("next") is None:
            break
        response = client.get(page.link("next").href)  # type: ignore[union-attr]
    assert len(ids) == len(set(ids)) and set(ids) == want


# -- history: a clone where one road changed and one was removed, as a refresh leaves them ----------------------

@pytest.fixture(scope="module")
def history_db(server_url: str, template_db: str) -> Iterator[str]:
    """A clone of the template for this module (clone_db is per test; the service here lives per module)."""
    name = "gis_test_api_history"
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        conn.execute(sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(sql.Identifier(name),
                                                                      sql.Identifier(template_db)))
    yield psycopg.conninfo.make_conninfo(server_url, dbname=name)
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture(scope="module")
def changed(history_db: str, serve_api: Callable[[str], AbstractContextManager[str]]
            ) -> Iterator[tuple[str, dict[str, object]]]:
    url = history_db
    with psycopg.connect(url, autocommit=True) as conn:
        rows = conn.execute("SELECT fid, name FROM base.roads ORDER BY fid LIMIT 2").fetchall()
        (kept, old_name), (gone, _) = rows
        at = conn.execute("SELECT now() - interval '1 day'").fetchone()[0]  # type: ignore[index]
        with conn.transaction():
            conn.execute("INSERT INTO base.roads_history (fid, name, road_class, lanes, width_m, geom, valid_from, "
                         "valid_to, row_hash, refresh_id, closed_refresh_id) SELECT fid, name, "
                         "road_class, lanes, width_m, geom, %s - interval '1 day', %s, row_hash, refresh_id, "
                         "refresh_id + 1 FROM base.roads WHERE fid IN (%s, %s)", (at, at, kept, gone))
            conn.execute("UPDATE base.roads SET name = '新名字', valid_from = %s, refresh_id = refresh_id + 1 "
                         "WHERE fid = %s", (at, kept))
            conn.execute("DELETE FROM base.roads WHERE fid = %s", (gone,))
    with serve_api(url) as api:
        yield api, {"kept": kept, "gone": gone, "old_name": old_name, "at": at}


def test_history_lists_versions_oldest_first(changed: tuple[str, dict[str, object]]) -> None:
    api, facts = changed
    response = httpx.get(f"{api}/collections/roads/items/{facts['kept']}/history")
    page = features(response)
    assert [f.properties["name"] for f in page.features] == [facts["old_name"], "新名字"]
    assert page.features[0].properties["valid_to"] == page.features[1].properties["valid_from"]


def test_history_of_a_removed_feature(changed: tuple[str, dict[str, object]]) -> None:
    api, facts = changed
    page = features(httpx.get(f"{api}/collections/roads/items/{facts['gone']}/history"))
    assert page.numberReturned == 1 and page.features[0].properties["valid_to"] is not None


def test_history_of_an_unknown_feature_is_404(changed: tuple[str, dict[str, object]]) -> None:
    api, _ = changed
    assert error(httpx.get(f"{api}/collections/roads/items/no-such-road/history"), 404).code == "NotFound"


def test_removed_feature_is_gone_now_but_there_before(changed: tuple[str, dict[str, object]]) -> None:
    api, facts = changed
    before = (facts["at"] - timedelta(minutes=1)).isoformat()  # type: ignore[operator]
    now_ids = [f["id"] for f in httpx.get(f"{api}/collections/roads/items?limit=10000").json()["features"]]
    then = FeatureCollection.model_validate_json(
        httpx.get(f"{api}/collections/roads/items", params={"limit": 10000, "datetime": before}).content)
    assert facts["gone"] not in now_ids and facts["gone"] in [f.id for f in then.features]


def test_item_as_it_was(changed: tuple[str, dict[str, object]]) -> None:
    api, facts = changed
    before = (facts["at"] - timedelta(minutes=1)).isoformat()  # type: ignore[operator]
    old = httpx.get(f"{api}/collections/roads/items/{facts['kept']}", params={"datetime": before}).json()
    new = httpx.get(f"{api}/collections/roads/items/{facts['kept']}").json()
    assert (old["properties"]["name"], new["properties"]["name"]) == (facts["old_name"], "新名字")


def test_removed_item_is_404_now(changed: tuple[str, dict[str, object]]) -> None:
    api, facts = changed
    assert error(httpx.get(f"{api}/collections/roads/items/{facts['gone']}"), 404).code == "NotFound"


def test_interval_gives_the_latest_version_in_it(changed: tuple[str, dict[str, object]]) -> None:
    api, facts = changed
    params = {"limit": 10000, "datetime": "2000-01-01/..", "filter": f"id = '{facts['kept']}'"}
    page = features(httpx.get(f"{api}/collections/roads/items", params=params))
    assert [f.properties["name"] for f in page.features] == ["新名字"]
