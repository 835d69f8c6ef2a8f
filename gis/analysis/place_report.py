"""The result of the pipeline, environmental and policing analyses (a summary and places by role) as JSON,
GeoJSON and a self-contained HTML page with a map.

The page's map (gis.svg) draws each role in a style: the pipeline analyses have their own table of roles
(gis.analysis.pipeline), the others pass one, so hotspot classes, buffers and routes each get their own colour.
"""

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import psycopg
from psycopg.abc import QueryNoTemplate
from psycopg.rows import dict_row

from gis.rendering import Drawing, cell, render
from gis.svg import MapFrame, Style

__all__ = ["PlacesResult", "Style", "feature", "fetch_dicts", "iso", "report_html", "to_geojson", "to_html",
           "to_json"]

MAX_TABLE_ROWS = 1000  # per role in a report; the GeoJSON has them all
HIDDEN_COLUMNS = ("role", "pipe_geometry")


@dataclass
class PlacesResult:
    analysis: str
    title: str
    parameters: dict[str, Any]
    summary: dict[str, Any]
    # role -> GeoJSON features (geometry in CGCS2000 lon/lat); the order is the order of the tables
    places: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    rules_file: str = ""
    # roles beyond the pipeline analyses' own: role -> style, drawn after them (sensor warnings)
    styles: dict[str, Style] = field(default_factory=dict)
    computed_at: datetime = field(default_factory=lambda: datetime.now(UTC))


def feature(fid: str, geometry: Any, properties: dict[str, Any]) -> dict[str, Any]:
    """A GeoJSON feature of a place; properties["role"] picks its style on the map."""
    return {"type": "Feature", "id": fid, "geometry": geometry, "properties": properties}


def fetch_dicts(conn: psycopg.Connection[Any], query: QueryNoTemplate, params: Mapping[str, Any]
                ) -> list[dict[str, Any]]:
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(query, params).fetchall()


def iso(value: Any) -> Any:
    """Times as RFC 3339 text for JSON; anything else unchanged."""
    return value.isoformat() if hasattr(value, "isoformat") else value


def to_json(result: PlacesResult) -> dict[str, Any]:
    return {
        "analysis": result.analysis, "title": result.title,
        "computed_at": result.computed_at.isoformat(timespec="seconds"), "rules_file": result.rules_file,
        "parameters": result.parameters, "summary": result.summary,
        **{role: [{**f["properties"], "geometry": f["geometry"]} for f in items]
           for role, items in result.places.items()},
    }


def to_geojson(result: PlacesResult) -> dict[str, Any]:
    """Every place once (a place listed under two roles is one feature, with its first role)."""
    seen: set[tuple[str, Any]] = set()
    features = []
    for items in result.places.values():
        for f in items:
            key = (f["properties"].get("role"), f["id"])
            if key not in seen:
                seen.add(key)
                features.append(f)
    return {"type": "FeatureCollection", "analysis": result.analysis, "summary": result.summary,
            "features": features}


def report_html(result: PlacesResult, drawing: Drawing, legend: list[tuple[str, str, str]],
                parameters: Mapping[str, Any] | None = None) -> str:
    """A result's page (gis/templates/reports/places.html); legend: (fill, stroke, text) of each role shown."""
    return render("reports/places.html", result=result, map=drawing, legend=legend, parameters=parameters or {},
                  hidden=HIDDEN_COLUMNS, max_rows=MAX_TABLE_ROWS)


def _drawing(result: PlacesResult, styles: Mapping[str, Style]) -> Drawing:
    features = [f for items in result.places.values() for f in items]
    frame = MapFrame([f["geometry"] for f in features])
    return frame.drawing([shape for role in styles for f in features if f["properties"].get("role") == role
                          for shape in frame.shapes(f["geometry"], f"{f['id']} {_title(f['properties'])}",
                                                    styles[role])])


def _title(p: dict[str, Any]) -> str:
    return "; ".join(f"{k}={cell(v)}" for k, v in p.items() if v is not None and k != "role")


def to_html(result: PlacesResult, styles: Mapping[str, Style], legend: Mapping[str, str]) -> str:
    """The page: summary, one map of every place (roles drawn in the order of `styles`), a table per role."""
    parameters = {k: v for k, v in result.parameters.items()
                  if v is not None and k not in result.summary}  # each value listed once
    present = {f["properties"].get("role") for items in result.places.values() for f in items}
    keys = [(styles[role][1] if styles[role][1] != "none" else styles[role][0], styles[role][0], text)
            for role, text in legend.items() if role in present]
    return report_html(result, _drawing(result, styles), keys, parameters)
