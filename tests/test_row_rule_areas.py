"""A spatial row rule's area (a police station's jurisdiction) follows the version of the layer it is read from:
a refresh that moves a jurisdiction takes effect on every service node with the next request, not when a cache
of each process expires."""

from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path

import geopandas
import httpx
import psycopg

from gis.layers import LayerRegistry
from gis.refresh.runner import RefreshRequest, run_refresh
from gis.security import keys
from gis.settings import Settings

_INSIDE = """
SELECT i.fid FROM policing.incidents i
WHERE ST_Intersects(i.geom, (SELECT ST_Union(j.geom) FROM policing.police_jurisdictions j WHERE j.station = %s))
"""


def _visible(api: str, key: str) -> set[str]:
    page = httpx.get(f"{api}/collections/incidents/items", params={"limit": 10000}, headers={"X-API-Key": key},
                     timeout=60)
    assert page.status_code == 200, page.text
    return {str(f["id"]) for f in page.json()["features"]}


def _inside(db: str, station: str) -> set[str]:
    with psycopg.connect(db) as conn:
        return {str(r[0]) for r in conn.execute(_INSIDE, (station,)).fetchall()}


def test_a_moved_jurisdiction_takes_effect_on_every_node_at_once(
        clone_db: Callable[[], str], serve_api: Callable[[str], AbstractContextManager[str]], settings: Settings,
        registry: LayerRegistry, tmp_path: Path) -> None:
    db = clone_db()
    spec = registry["police_jurisdictions"]
    delivered = geopandas.read_file(settings.samples_dir / spec.source.path, encoding="GBK")
    counts = {s: len(_inside(db, s)) for s in delivered["STATION"]}
    mine, other = sorted(counts, key=lambda s: (counts[s], s))[-2:]  # two stations with incidents, distinct sets
    with psycopg.connect(db) as conn:
        _record, police = keys.create_key(conn, "police of one station", "policing_app", "",
                                          claims={"jurisdiction": mine})
        conn.commit()
    before = _inside(db, mine)
    with serve_api(db) as node1, serve_api(db) as node2:
        assert _visible(node1, police) == before and _visible(node2, police) == before  # both cached the area
        # the yearly delivery: this station now covers the other's area
        moved = delivered.copy()
        moved.loc[moved["STATION"] == mine, "geometry"] = delivered.loc[delivered["STATION"] == other,
                                                                         "geometry"].values[0]
        path = tmp_path / "police_jurisdictions.shp"
        moved.to_file(path, encoding="GBK")
        run_refresh(db, RefreshRequest(spec, path, settings.city_extent, settings.rejects_dir, progress=False))
        after = _inside(db, mine)
        assert after != before
        assert _visible(node1, police) == after
        assert _visible(node2, police) == after
