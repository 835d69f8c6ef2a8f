"""OGC API - Processes over the policing analyses (gis.analysis.policing): police-jurisdiction,
police-nearest and police-hotspots, run by the same pygeoapi machinery and job manager as
services.processes (which registers them). Each answers JSON (default), GeoJSON or an HTML page with a map.

Hotspots read the restricted incidents layer: only roles the access policy lets read it may run them, and
they count only the rows the caller may read (the policy's row rule on the caller's claim, the same rule
the Features routes apply); every run is audited.
"""

from typing import Any, ClassVar

import psycopg
from pydantic import Field, create_model

from gis.analysis import policing
from gis.analysis.place_report import PlacesResult
from gis.analysis.policing_rules import PolicingRules
from gis.security import rows
from services.processes.base import PlacesProcess, places_report
from services.processes.inputs import Bbox, Format, GeoJSON, ProcessInputs, names_of
from services.processes.pygeoapi_bridge import ProcessContext

POLICE_JURISDICTION = "police-jurisdiction"
POLICE_NEAREST = "police-nearest"
POLICE_HOTSPOTS = "police-hotspots"
PROCESS_IDS = (POLICE_JURISDICTION, POLICE_NEAREST, POLICE_HOTSPOTS)

POINT = Field(title="Point (GeoJSON Point or [lon, lat], CGCS2000 / CRS84)")


class _Policing(PlacesProcess[PolicingRules]):
    rules_field = "policing_rules"
    keywords = ("policing", "智慧警务")
    report = places_report(policing.STYLES, policing.LEGEND)


class PointInputs(ProcessInputs):
    point: GeoJSON = POINT
    format: Format = "json"


class JurisdictionProcessor(_Policing):
    id = POLICE_JURISDICTION
    title = ("Jurisdiction of a point", "辖区查询")
    abstract = "The police jurisdiction a point lies in, with its police station."
    example_inputs: ClassVar = {"point": [123.42, 41.76]}
    Inputs = PointInputs

    def reads(self, inputs: Any) -> tuple[str, ...]:
        return self.rules.jurisdictions.id, self.rules.stations.id

    def analyse(self, conn: psycopg.Connection, inputs: Any) -> PlacesResult:
        return policing.jurisdiction(conn, self.rules, inputs.point)

    def counted(self, result: PlacesResult) -> int | None:
        return int(result.summary["jurisdictions"])


class NearestProcessor(_Policing):
    id = POLICE_NEAREST
    title = ("Nearest police stations", "最近派出所")
    abstract = ("The nearest police stations to a point: by distance along the roads when the road layer is a graph "
                "(segment ends shared; point and station within {rules.nearest.snap_within_m:g} m of a road), else "
                "in a straight line; each station says which (method).")
    example_inputs: ClassVar = {"point": [123.42, 41.76], "count": 3}

    @classmethod
    def inputs(cls, context: ProcessContext) -> type[ProcessInputs]:
        near = cls.rules_in(context).nearest
        return create_model("NearestInputs", __base__=PointInputs, count=(int, Field(
            near.default_count, title="How many stations", ge=1, le=near.max_count)))

    def reads(self, inputs: Any) -> tuple[str, ...]:
        return self.rules.stations.id, self.rules.roads.id

    def analyse(self, conn: psycopg.Connection, inputs: Any) -> PlacesResult:
        return policing.nearest(conn, self.rules, inputs.point, inputs.count)


class HotspotsProcessor(_Policing):
    id = POLICE_HOTSPOTS
    title = ("Incident hotspots (Getis-Ord Gi*)", "警情热点分析")
    abstract = ("Incidents of a time window counted on a square grid (default {rules.hotspots.cell_m:g} m, EPSG:4550) "
                "with the Getis-Ord Gi* z-score of each cell (the cell and its 8 neighbours); only the incidents the "
                "caller may read are counted. Restricted: policing roles only.")
    example_inputs: ClassVar = {"datetime": "2026-01-01/2026-03-31", "cell_m": 500}
    rows_applied = True  # only the incidents the caller may read are counted (`scope`)

    @classmethod
    def inputs(cls, context: ProcessContext) -> type[ProcessInputs]:
        rules = cls.rules_in(context)
        h = rules.hotspots
        categories = list(context.registry[rules.incidents.id].known_field(rules.category_field).values or ())
        return create_model(
            "HotspotsInputs", __base__=ProcessInputs,
            datetime=(str | None, Field(None, title="Time window (RFC 3339 interval start/end, '..' open)")),
            bbox=(Bbox | None, Field(None, title="Extent (minlon,minlat,maxlon,maxlat); default: the incidents "
                                                 "counted")),
            cell_m=(float, Field(h.cell_m, title="Cell size (m)", ge=h.min_cell_m, le=h.max_cell_m)),
            categories=(names_of(categories, split=False) | None,
                        Field(None, title="Incident categories (default all)")),
            format=(Format, "json"))

    def reads(self, inputs: Any) -> tuple[str, ...]:
        return (self.rules.incidents.id,)

    def scope(self) -> policing.RowScope:
        """The incidents the caller may read: its role's row rule on its claim (none outside a request)."""
        if self.caller is None:
            return policing.RowScope()
        view = self.caller.role.view(self.rules.incidents.id)
        if view.rows is None:
            return policing.RowScope()
        return policing.RowScope(view.rows, rows.claim_value(self.caller.claims, view.rows))

    def analyse(self, conn: psycopg.Connection, inputs: Any) -> PlacesResult:
        return policing.hotspots(conn, self.rules, self.context.registry, self.scope(), datetime=inputs.datetime,
                                 bbox=inputs.bbox, cell_m=inputs.cell_m, categories=inputs.categories)

    def counted(self, result: PlacesResult) -> int | None:
        return int(result.summary["incidents"])


PROCESSES = (JurisdictionProcessor, NearestProcessor, HotspotsProcessor)
