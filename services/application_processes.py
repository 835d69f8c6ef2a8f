"""What the environmental and policing processes share: the output formats (JSON, GeoJSON, an HTML page
with a map) over a PlacesResult, on the caller-bound, audited base of every process (services.processors).
"""

from collections.abc import Mapping
from typing import Any

import orjson
import psycopg

from gis.analysis import place_report
from gis.analysis.place_report import PlacesResult, Style
from gis.analysis.proposal import InvalidProposal
from services.process_access import require_full_read
from services.process_inputs import input_value
from services.processors import CallerBoundProcessor

FORMATS = ("json", "geojson", "html")
FORMAT_INPUT = {"title": "Output format", "minOccurs": 0, "maxOccurs": 1,
                "schema": {"type": "string", "enum": list(FORMATS), "default": "json"}}


def describe(module: str, pid: str, cls: str, title: dict[str, str], description: str, keywords: list[str],
             inputs: dict[str, Any], example: dict[str, Any]) -> dict[str, Any]:
    """A process description for the bridge (the class is looked up by its dotted path)."""
    return {"name": f"{module}.{cls}", "metadata": {
        "version": "1.0.0", "id": pid, "title": title, "description": {"en": description},
        "jobControlOptions": ["sync-execute", "async-execute"], "outputTransmission": ["value"],
        "keywords": keywords, "links": [], "inputs": {**inputs, "format": FORMAT_INPUT},
        "outputs": {"result": {"title": "Result", "schema": {"type": "object",
                                                             "contentMediaType": "application/json"}}},
        "example": {"inputs": example}}}


class ApplicationProcessor(CallerBoundProcessor):
    """One analysis over the layers `reads`, answered in the format asked for; subclasses give `run`."""

    styles: Mapping[str, Style] = {}
    legend: Mapping[str, str] = {}

    def rows_applied(self) -> tuple[str, ...]:
        """Layers of `reads` whose row rule `run` applies itself (any other row-limited layer refuses the run)."""
        return ()

    def reads(self, data: dict[str, Any]) -> tuple[str, ...]:
        raise NotImplementedError

    def run(self, conn: psycopg.Connection, data: dict[str, Any]) -> PlacesResult:
        raise NotImplementedError

    def counted(self, result: PlacesResult) -> int | None:
        """How many features of the audited layers the answer rests on (for the audit log)."""
        return sum(len(items) for items in result.places.values())

    def execute(self, data: dict[str, Any], outputs: dict[str, Any] | None = None) -> tuple[str, Any]:
        data = self.known_inputs(data)
        fmt = input_value(data, "format") or "json"
        if fmt not in FORMATS:
            raise InvalidProposal("format", f"'{str(fmt)[:20]}' is not json, geojson or html")
        values = {k: input_value(data, k) for k in data if k != "format"}
        layers = self.reads(values)
        require_full_read(self.access, self.context.registry, layers, self.rows_applied())
        with self.context.pool.connection() as conn:
            result = self.run(conn, values)
            counted = self.counted(result)
            self.audit_reads(conn, dict.fromkeys(layers, counted), values)
        if fmt == "geojson":
            return "application/geo+json", orjson.dumps(place_report.to_geojson(result))
        if fmt == "html":
            return "text/html", place_report.to_html(result, self.styles, self.legend)
        return "application/json", place_report.to_json(result)
