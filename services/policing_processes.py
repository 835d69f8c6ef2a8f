"""OGC API - Processes over the policing analyses (gis.analysis.policing): police-jurisdiction,
police-nearest and police-hotspots, run by the same pygeoapi machinery and job manager as
services.processes (which registers them). Each answers JSON (default), GeoJSON or an HTML page with a map.

Hotspots read the restricted incidents layer: only roles the access policy lets read it may run them, and
they count only the rows the caller may read (the policy's row rule on the caller's claim, the same rule
the Features routes apply); every run is audited.
"""

from typing import Any

import psycopg

from gis.analysis import policing
from gis.analysis.place_report import PlacesResult
from gis.analysis.policing_rules import PolicingRules
from gis.project import Project
from gis.security import rows
from services.application_processes import ApplicationProcessor, describe

POLICE_JURISDICTION = "police-jurisdiction"
POLICE_NEAREST = "police-nearest"
POLICE_HOTSPOTS = "police-hotspots"
PROCESS_IDS = (POLICE_JURISDICTION, POLICE_NEAREST, POLICE_HOTSPOTS)

class _PolicingProcessor(ApplicationProcessor):
    styles = policing.STYLES
    legend = policing.LEGEND

    @property
    def rules(self) -> PolicingRules:
        return self.context.project.policing_rules


class JurisdictionProcessor(_PolicingProcessor):
    def reads(self, data: dict[str, Any]) -> tuple[str, ...]:
        return self.rules.jurisdictions.id, self.rules.stations.id

    def run(self, conn: psycopg.Connection, data: dict[str, Any]) -> PlacesResult:
        return policing.jurisdiction(conn, self.rules, data.get("point"))

    def counted(self, result: PlacesResult) -> int | None:
        return int(result.summary["jurisdictions"])


class NearestProcessor(_PolicingProcessor):
    def reads(self, data: dict[str, Any]) -> tuple[str, ...]:
        return self.rules.stations.id, self.rules.roads.id

    def run(self, conn: psycopg.Connection, data: dict[str, Any]) -> PlacesResult:
        return policing.nearest(conn, self.rules, data.get("point"), data.get("count"))


class HotspotsProcessor(_PolicingProcessor):
    def reads(self, data: dict[str, Any]) -> tuple[str, ...]:
        return (self.rules.incidents.id,)

    def rows_applied(self) -> tuple[str, ...]:
        return (self.rules.incidents.id,)

    def scope(self) -> policing.RowScope:
        """The incidents the caller may read: its role's row rule on its claim (none outside a request)."""
        if self.caller is None:
            return policing.RowScope()
        view = self.caller.role.view(self.rules.incidents.id)
        if view.rows is None:
            return policing.RowScope()
        return policing.RowScope(view.rows, rows.claim_value(self.caller.claims, view.rows))

    def run(self, conn: psycopg.Connection, data: dict[str, Any]) -> PlacesResult:
        return policing.hotspots(conn, self.rules, self.context.registry, self.scope(),
                                 datetime=data.get("datetime"), bbox=data.get("bbox"), cell_m=data.get("cell_m"),
                                 categories=data.get("categories"))

    def counted(self, result: PlacesResult) -> int | None:
        return int(result.summary["incidents"])


def process_metadata(project: Project) -> dict[str, dict[str, Any]]:
    """The policing processes' descriptions."""
    rules, registry = project.policing_rules, project.registry
    h, near = rules.hotspots, rules.nearest
    point = {"title": "Point (GeoJSON Point or [lon, lat], CGCS2000 / CRS84)", "minOccurs": 1, "maxOccurs": 1,
             "schema": {"type": "object", "contentMediaType": "application/geo+json"}}
    categories = list(registry[rules.incidents.id].field(rules.category_field).values or ())  # type: ignore[union-attr]
    keywords = ["policing", "智慧警务"]
    return {
        POLICE_JURISDICTION: describe(
            __name__, POLICE_JURISDICTION, "JurisdictionProcessor", {"en": "Jurisdiction of a point",
                                                                     "zh": "辖区查询"},
            "The police jurisdiction a point lies in, with its police station.", keywords, {"point": point},
            {"point": [123.42, 41.76]}),
        POLICE_NEAREST: describe(
            __name__, POLICE_NEAREST, "NearestProcessor", {"en": "Nearest police stations", "zh": "最近派出所"},
            "The nearest police stations to a point: by distance along the roads when the road layer is a graph "
            f"(segment ends shared; point and station within {near.snap_within_m:g} m of a road), else in a "
            "straight line; each station says which (method).", keywords,
            {"point": point, "count": {"title": "How many stations", "minOccurs": 0, "maxOccurs": 1, "schema": {
                "type": "integer", "minimum": 1, "maximum": near.max_count, "default": near.default_count}}},
            {"point": [123.42, 41.76], "count": 3}),
        POLICE_HOTSPOTS: describe(
            __name__, POLICE_HOTSPOTS, "HotspotsProcessor", {"en": "Incident hotspots (Getis-Ord Gi*)",
                                                             "zh": "警情热点分析"},
            f"Incidents of a time window counted on a square grid (default {h.cell_m:g} m, EPSG:4550) with the "
            "Getis-Ord Gi* z-score of each cell (the cell and its 8 neighbours); only the incidents the caller "
            "may read are counted. Restricted: policing roles only.", keywords,
            {"datetime": {"title": "Time window (RFC 3339 interval start/end, '..' open)", "minOccurs": 0,
                          "maxOccurs": 1, "schema": {"type": "string"}},
             "bbox": {"title": "Extent (minlon,minlat,maxlon,maxlat); default: the incidents counted",
                      "minOccurs": 0, "maxOccurs": 1,
                      "schema": {"type": "array", "items": {"type": "number"}, "minItems": 4, "maxItems": 4}},
             "cell_m": {"title": "Cell size (m)", "minOccurs": 0, "maxOccurs": 1, "schema": {
                 "type": "number", "minimum": h.min_cell_m, "maximum": h.max_cell_m, "default": h.cell_m}},
             "categories": {"title": "Incident categories (default all)", "minOccurs": 0, "maxOccurs": 1,
                            "schema": {"type": "array", "items": {"type": "string", "enum": categories}}}},
            {"datetime": "2026-01-01/2026-03-31", "cell_m": 500}),
    }
