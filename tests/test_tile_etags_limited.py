"""A row-limited caller's tile ETag follows what it can see: a change to rows outside its row rule leaves its tag
(and a revalidation answers 304), a change to a row it sees changes it. Everyone else's tag is the layer's
version. Real service, real refreshes of the incidents delivery, a police key of one station."""

import csv
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path

import httpx
import psycopg
from test_tiles import tile_of

from gis.layers import LayerRegistry
from gis.refresh.runner import RefreshRequest, run_refresh
from gis.security import keys
from gis.settings import Settings

_STATIONS = """
SELECT j.station, array_agg(i.fid ORDER BY i.fid) FROM policing.police_jurisdictions j
JOIN policing.incidents i ON ST_Intersects(i.geom, j.geom) GROUP BY j.station ORDER BY count(*) DESC LIMIT 1
"""


def _deliver(url: str, settings: Settings, registry: LayerRegistry, tmp_path: Path, name: str,
             change: Callable[[list[dict[str, str]]], list[dict[str, str]]]) -> None:
    spec = registry["incidents"]
    with (settings.samples_dir / spec.source.path).open(encoding="utf-8", newline="") as stream:
        rows = list(csv.DictReader(stream))
    path = tmp_path / name / "incidents.csv"
    path.parent.mkdir()
    with path.open("w", encoding="utf-8", newline="") as stream:
        writer = csv.DictWriter(stream, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(change(rows))
    run_refresh(url, RefreshRequest(spec, path, settings.city_extent, settings.rejects_dir, progress=False))


def _flip(fid: str) -> Callable[[list[dict[str, str]]], list[dict[str, str]]]:
    def change(rows: list[dict[str, str]]) -> list[dict[str, str]]:
        for row in rows:
            if row["incident_id"] == fid:
                row["status"] = "open" if row["status"] == "closed" else "closed"
        return rows
    return change


def test_a_row_limited_tile_etag_moves_only_with_the_rows_its_caller_sees(
        clone_db: Callable[[], str], settings: Settings, registry: LayerRegistry, tmp_path: Path,
        serve_api: Callable[[str], AbstractContextManager[str]], admin_headers: dict[str, str]) -> None:
    db = clone_db()
    with psycopg.connect(db) as conn:
        station, mine = conn.execute(_STATIONS).fetchone()
        _record, police = keys.create_key(conn, "police of one station", "policing_app", "",
                                          claims={"jurisdiction": station})
        hidden = conn.execute("SELECT fid FROM policing.incidents WHERE NOT fid = ANY(%s) ORDER BY fid LIMIT 1",
                              (mine,)).fetchone()[0]
        lon, lat = conn.execute("SELECT ST_X(geom), ST_Y(geom) FROM policing.incidents WHERE fid = %s",
                                (mine[0],)).fetchone()
        conn.commit()
    z, x, y = tile_of(lon, lat, 15)  # from FIELDS_ZOOM on every field is in the tile
    headers = {"X-API-Key": police}
    with serve_api(db) as api, httpx.Client(base_url=api, timeout=60) as http:
        path = f"/collections/incidents/tiles/WebMercatorQuad/{z}/{y}/{x}"
        first = http.get(path, headers=headers)
        assert first.status_code == 200 and first.content
        admin_first = http.get(path, headers=admin_headers)
        # A row the caller cannot see changes: the layer's version moves.
        _deliver(db, settings, registry, tmp_path, "hidden", _flip(hidden))
        again = http.get(path, headers={**headers, "If-None-Match": first.headers["etag"]})
        fresh = http.get(path, headers=headers)
        admin_again = http.get(path, headers={**admin_headers, "If-None-Match": admin_first.headers["etag"]})
        # A row it sees changes.
        _deliver(db, settings, registry, tmp_path, "visible", lambda rows: _flip(hidden)(_flip(mine[0])(rows)))
        changed = http.get(path, headers={**headers, "If-None-Match": first.headers["etag"]})
    assert again.status_code == 304 and again.headers["etag"] == first.headers["etag"]
    assert (fresh.status_code, fresh.content, fresh.headers["etag"]) == (200, first.content, first.headers["etag"])
    assert admin_again.status_code == 200  # the whole layer's caller sees the change, tagged by the version
    assert admin_again.headers["etag"] != admin_first.headers["etag"] and ".r" in admin_again.headers["etag"]
    assert changed.status_code == 200 and changed.content != first.content
    assert changed.headers["etag"] != first.headers["etag"]
