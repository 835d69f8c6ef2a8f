"""The catalog (资源目录): one OGC API Records record per layer, from the registry and what refreshes recorded.

A record is a GeoJSON feature (Records Part 1, record core): its geometry is the layer's extent, its
`time` the layer's temporal extent, its properties the registry's metadata (titles, description,
keywords, owning department, access class, update frequency) and the last refresh with its counts.
Pure functions, but for the one statement that reads ops.layer_stats and ops.refresh_log; links are
the web layer's business.
"""

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from psycopg import AsyncConnection

from gis.errors import InvalidInput
from gis.features import crs as crs_
from gis.features.params import parse_bbox, parse_limit, parse_offset
from gis.features.temporal import TimeRange, parse_datetime
from gis.layers import AccessClass, Domain, LayerSpec

RECORD_CORE = "http://www.opengis.net/spec/ogcapi-records-1/1.0/req/record-core"
CONFORMANCE = (
    "http://www.opengis.net/spec/ogcapi-records-1/1.0/conf/record-core",
    "http://www.opengis.net/spec/ogcapi-records-1/1.0/conf/record-collection",
    "http://www.opengis.net/spec/ogcapi-records-1/1.0/conf/record-core-query-parameters",
    "http://www.opengis.net/spec/ogcapi-records-1/1.0/conf/json",
    "http://www.opengis.net/spec/ogcapi-records-1/1.0/conf/html",
)
DOMAIN_SCHEME = "https://gis.shenyang.example/def/domain"  # our own vocabulary of the five domains
DOMAIN_TITLES = {Domain.base: "基础地理 · base", Domain.pipeline: "地下管线 · pipelines",
                 Domain.planning: "规划 · planning", Domain.environment: "生态环境 · environment",
                 Domain.policing: "公安 · policing"}


class Described(Protocol):
    """What a vector and a raster layer spec both declare."""

    id: str
    domain: Domain
    description: str
    keywords: tuple[str, ...]
    department: str
    access: AccessClass
    update_frequency: str

    @property
    def title(self) -> Any: ...


@dataclass(frozen=True)
class Facts:
    """What the last refreshes recorded about one layer."""

    row_count: int | None
    extent: tuple[float, float, float, float] | None  # lon/lat
    time_extent: tuple[datetime | None, datetime | None] | None
    changed_at: datetime | None
    refresh_id: int | None
    refreshed_at: datetime | None
    counts: Mapping[str, int | None]  # inserted, updated, closed, unchanged, rejected


# Vector layers from their stats; raster layers from their current version (ops.raster_versions).
_FACTS_SQL = (
    "SELECT s.layer_id, s.row_count, s.extent, s.time_extent, s.changed_at, r.refresh_id, r.finished_at, "
    "r.inserted, r.updated, r.closed, r.unchanged, r.rejected "
    "FROM ops.layer_stats s LEFT JOIN ops.refresh_log r ON r.refresh_id = s.last_refresh_id "
    "UNION ALL "
    "SELECT v.layer_id, NULL, v.lonlat_bounds, ARRAY[(SELECT min(w.valid_from) FROM ops.raster_versions w "
    "WHERE w.layer_id = v.layer_id), NULL::timestamptz], v.valid_from, r.refresh_id, r.finished_at, "
    "r.inserted, r.updated, r.closed, r.unchanged, r.rejected "
    "FROM ops.raster_versions v JOIN ops.refresh_log r ON r.refresh_id = v.refresh_id WHERE v.valid_to IS NULL"
)
_COUNT_NAMES = ("inserted", "updated", "closed", "unchanged", "rejected")


async def read_facts(conn: AsyncConnection) -> dict[str, Facts]:
    cursor = await conn.execute(_FACTS_SQL)
    found: dict[str, Facts] = {}
    for row in await cursor.fetchall():
        extent = tuple(row[2]) if row[2] is not None and None not in row[2] else None
        times = (row[3] + [None, None])[:2] if row[3] is not None else None
        found[row[0]] = Facts(row[1], extent, None if times is None else (times[0], times[1]),
                              row[4], row[5], row[6], dict(zip(_COUNT_NAMES, row[7:12], strict=True)))
    return found


# -- the query ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class CatalogQuery:
    terms: tuple[str, ...] = ()  # `q`: any of them, case-insensitive, in the record's text
    bbox: tuple[float, float, float, float] | None = None  # CRS84
    time: TimeRange | None = None
    limit: int = 100
    offset: int = 0


def parse_catalog_query(params: Mapping[str, str]) -> CatalogQuery:
    """q, bbox (CRS84), datetime, limit, offset; every refusal names its parameter."""
    terms: tuple[str, ...] = ()
    if "q" in params:
        terms = tuple(t.strip().casefold() for t in params["q"].split(",") if t.strip())
        if not terms:
            raise InvalidInput("q", "give one or more search terms, separated by commas")
    return CatalogQuery(
        terms=terms,
        bbox=parse_bbox(params["bbox"], crs_.CRS84) if "bbox" in params else None,
        time=parse_datetime(params["datetime"]) if "datetime" in params else None,
        limit=parse_limit(params.get("limit")),
        offset=parse_offset(params.get("offset")),
    )


# -- records -----------------------------------------------------------------------------------------------

def iso(value: datetime | None) -> str | None:
    if value is None or value in (datetime.min, datetime.max):
        return None
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _polygon(box: tuple[float, float, float, float]) -> dict[str, Any]:
    x0, y0, x1, y1 = box
    return {"type": "Polygon", "coordinates": [[[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]]]}


def record(spec: Described, facts: Facts | None, kind: str, tells_counts: bool = True) -> dict[str, Any]:
    """The record of one layer (without links). `tells_counts` False: a row-limited caller sees no totals, extents
    or change time."""
    properties: dict[str, Any] = {
        "type": "dataset",
        "title": f"{spec.title.zh} · {spec.title.en}",
        "titles": {"zh": spec.title.zh, "en": spec.title.en},
        "description": spec.description,
        "keywords": list(spec.keywords),
        "language": {"code": "zh-CN"},
        "themes": [{"concepts": [{"id": spec.domain.value, "title": DOMAIN_TITLES[spec.domain]}],
                    "scheme": DOMAIN_SCHEME}],
        "contacts": [{"organization": spec.department, "roles": ["owner"]}],
        "rights": f"access class: {spec.access.value}",
        "domain": spec.domain.value,
        "department": spec.department,
        "accessClass": spec.access.value,
        "updateFrequency": spec.update_frequency,
        "layerKind": kind,
    }
    if isinstance(spec, LayerSpec):
        properties["geometryType"] = spec.geometry.value
    time: dict[str, Any] | None = None
    geometry: dict[str, Any] | None = None
    if facts is not None:
        refresh: dict[str, Any] = {"refreshId": facts.refresh_id, "finishedAt": iso(facts.refreshed_at)}
        if tells_counts:
            # A row-limited caller sees none of the whole layer's facts: its count, extents and the time of its
            # last change would tell of the rows it may not read.
            properties["updated"] = iso(facts.changed_at)
            properties["numberOfFeatures"] = facts.row_count
            refresh.update({name: value for name, value in facts.counts.items()})
            if facts.extent is not None:
                geometry = _polygon(facts.extent)
            if facts.time_extent is not None and facts.time_extent[0] is not None:
                time = {"interval": [iso(facts.time_extent[0]), iso(facts.time_extent[1]) or ".."]}
        properties["lastRefresh"] = refresh
    return {"id": spec.id, "type": "Feature", "conformsTo": [RECORD_CORE], "geometry": geometry, "time": time,
            "properties": properties}


# -- search ------------------------------------------------------------------------------------------------

def _text(found: dict[str, Any]) -> str:
    p = found["properties"]
    parts = [found["id"], p["title"], p["description"], p["department"], p["domain"], *p["keywords"]]
    return "\n".join(parts).casefold()


def _overlaps_box(found: dict[str, Any], box: tuple[float, float, float, float]) -> bool:
    geometry = found.get("geometry")
    if geometry is None:
        return False
    ring = geometry["coordinates"][0]
    x0, y0, x1, y1 = (float(v) for v in (ring[0][0], ring[0][1], ring[2][0], ring[2][1]))
    if box[0] > box[2]:  # across the antimeridian: either half
        return (y0 <= box[3] and box[1] <= y1) and (x1 >= box[0] or x0 <= box[2])
    return x0 <= box[2] and box[0] <= x1 and y0 <= box[3] and box[1] <= y1


def _overlaps_time(found: dict[str, Any], time: TimeRange) -> bool:
    interval = (found.get("time") or {}).get("interval")
    if not interval:
        return False
    start = datetime.fromisoformat(interval[0])
    end = None if interval[1] in (None, "..") else datetime.fromisoformat(interval[1])
    after_start = time.end is None or start <= time.end
    before_end = time.start is None or end is None or end >= time.start
    return after_start and before_end


def search(records: Iterable[dict[str, Any]], q: CatalogQuery) -> list[dict[str, Any]]:
    """The records that match every given criterion, in the registry's order."""
    found = []
    for candidate in records:
        if q.terms and not any(term in _text(candidate) for term in q.terms):
            continue
        if q.bbox is not None and not _overlaps_box(candidate, q.bbox):
            continue
        if q.time is not None and not _overlaps_time(candidate, q.time):
            continue
        found.append(candidate)
    return found
