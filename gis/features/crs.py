"""The coordinate reference systems the service answers in (OGC API Features Part 2).

Layers are stored in CGCS2000 (EPSG:4490) with PostGIS's lon/lat order. A response or a request
geometry in another CRS is one ST_Transform away; where the CRS's authority axis order is
northing-first (EPSG:4490 and 4326 are lat/lon, the Gauss-Krüger zones are northing/easting) the
coordinates are swapped, as Part 2 requires. CRS84 is served from CGCS2000 coordinates unchanged:
the two agree to centimetres (see gis/crs.py).
"""

import re
from dataclasses import dataclass

from psycopg import sql

from gis.crs import STORAGE_SRID
from gis.errors import InvalidInput


@dataclass(frozen=True)
class Crs:
    uri: str
    srid: int  # the PostGIS SRID whose lon/lat or easting/northing numbers this CRS has
    northing_first: bool  # the authority's axis order is lat/lon or northing/easting
    geographic: bool
    title: str

    @property
    def digits(self) -> int:
        """Decimal places in responses: about a centimetre either way."""
        return 7 if self.geographic else 2

    @property
    def is_storage(self) -> bool:
        return self.srid == STORAGE_SRID and not self.northing_first


CRS84 = Crs("http://www.opengis.net/def/crs/OGC/1.3/CRS84", STORAGE_SRID, False, True, "WGS 84 (lon/lat)")
EPSG_4490 = Crs("http://www.opengis.net/def/crs/EPSG/0/4490", 4490, True, True, "CGCS2000 (lat/lon)")
EPSG_4326 = Crs("http://www.opengis.net/def/crs/EPSG/0/4326", 4326, True, True, "WGS 84 (lat/lon)")
EPSG_3857 = Crs("http://www.opengis.net/def/crs/EPSG/0/3857", 3857, False, False, "Web Mercator")
EPSG_4549 = Crs("http://www.opengis.net/def/crs/EPSG/0/4549", 4549, True, False,
                "CGCS2000 / 3-degree Gauss-Kruger CM 120E (northing/easting)")
EPSG_4550 = Crs("http://www.opengis.net/def/crs/EPSG/0/4550", 4550, True, False,
                "CGCS2000 / 3-degree Gauss-Kruger CM 123E (northing/easting)")

SUPPORTED: tuple[Crs, ...] = (CRS84, EPSG_4490, EPSG_4326, EPSG_3857, EPSG_4549, EPSG_4550)
STORAGE_CRS = EPSG_4490
DEFAULT_CRS = CRS84

_BY_URI = {c.uri: c for c in SUPPORTED}
_EPSG_FORMS = (
    re.compile(r"^https?://www\.opengis\.net/def/crs/EPSG/0/(\d+)$"),
    re.compile(r"^\[?EPSG:(\d+)\]?$", re.IGNORECASE),
    re.compile(r"^urn:ogc:def:crs:EPSG:[^:]*:(\d+)$", re.IGNORECASE),
)
_CRS84_FORMS = frozenset(f.upper() for f in (
    "https://www.opengis.net/def/crs/OGC/1.3/CRS84", "OGC:CRS84", "[OGC:CRS84]", "CRS84",
    "urn:ogc:def:crs:OGC:1.3:CRS84", "urn:ogc:def:crs:OGC::CRS84",
))


def parse_crs(value: str, parameter: str) -> Crs:
    """A supported CRS from its URI (or the EPSG:nnnn / [OGC:CRS84] short forms); else InvalidInput."""
    text = value.strip()
    if text in _BY_URI:
        return _BY_URI[text]
    if text.upper() in _CRS84_FORMS:
        return CRS84
    for form in _EPSG_FORMS:
        match = form.match(text)
        if match:
            found = _BY_URI.get(f"http://www.opengis.net/def/crs/EPSG/0/{int(match.group(1))}")
            if found:
                return found
            break
    supported = ", ".join(c.uri for c in SUPPORTED)
    raise InvalidInput(parameter, f"unsupported CRS '{value[:200]}'; supported: {supported}")


def to_output(crs: Crs, geom: sql.Composable) -> sql.Composable:
    """The stored geometry expression, in the response CRS's numbers and axis order."""
    out: sql.Composable = geom
    if crs.srid != STORAGE_SRID:
        out = sql.SQL("ST_Transform({}, {})").format(out, sql.Literal(int(crs.srid)))
    if crs.northing_first:
        out = sql.SQL("ST_FlipCoordinates({})").format(out)
    return out


def to_storage(crs: Crs, geom: sql.Composable) -> sql.Composable:
    """A geometry expression whose numbers are in `crs` (authority axis order), as stored geometry.

    `geom` must carry no SRID or crs.srid; the result is in EPSG:4490, lon/lat.
    """
    out: sql.Composable = sql.SQL("ST_SetSRID({}, {})").format(geom, sql.Literal(int(crs.srid)))
    if crs.northing_first:
        out = sql.SQL("ST_FlipCoordinates({})").format(out)
    if crs.srid != STORAGE_SRID:
        out = sql.SQL("ST_Transform({}, {})").format(out, sql.Literal(STORAGE_SRID))
    return out
