"""OGC API - Processes over the environmental analyses (gis.analysis.environment): env-latest,
env-exceedances and env-source-buffers, run by the same pygeoapi machinery and job manager as
services.processes (which registers them). Each answers JSON (default), GeoJSON or an HTML page with a map.
"""

from typing import Any

import psycopg

from gis.analysis import environment
from gis.analysis.environment_rules import (
    EnvironmentRules,
)
from gis.analysis.place_report import PlacesResult
from gis.project import Project
from services.application_processes import ApplicationProcessor, describe

ENV_LATEST = "env-latest"
ENV_EXCEEDANCES = "env-exceedances"
ENV_SOURCE_BUFFERS = "env-source-buffers"
PROCESS_IDS = (ENV_LATEST, ENV_EXCEEDANCES, ENV_SOURCE_BUFFERS)

class _EnvironmentProcessor(ApplicationProcessor):
    styles = environment.STYLES
    legend = environment.LEGEND

    @property
    def rules(self) -> EnvironmentRules:
        return self.context.project.environment_rules


class LatestProcessor(_EnvironmentProcessor):
    def reads(self, data: dict[str, Any]) -> tuple[str, ...]:
        return self.rules.stations.id, self.rules.observations.id

    def run(self, conn: psycopg.Connection, data: dict[str, Any]) -> PlacesResult:
        return environment.latest(conn, self.rules, datetime=data.get("datetime"), stations=data.get("stations"),
                                  pollutants=data.get("pollutants"))


class ExceedancesProcessor(LatestProcessor):
    def run(self, conn: psycopg.Connection, data: dict[str, Any]) -> PlacesResult:
        return environment.exceedances(conn, self.rules, datetime=data.get("datetime"),
                                       stations=data.get("stations"), pollutants=data.get("pollutants"))

    def counted(self, result: PlacesResult) -> int | None:
        return int(result.summary["observations_checked"])


class SourceBuffersProcessor(_EnvironmentProcessor):
    def reads(self, data: dict[str, Any]) -> tuple[str, ...]:
        return self.rules.sources.id, self.rules.redline.id, self.rules.water.id

    def run(self, conn: psycopg.Connection, data: dict[str, Any]) -> PlacesResult:
        return environment.source_buffers(conn, self.rules, sources=data.get("sources"),
                                          emission_classes=data.get("emission_classes"))

    def counted(self, result: PlacesResult) -> int | None:
        return int(result.summary["sources"])


def process_metadata(project: Project) -> dict[str, dict[str, Any]]:
    """The environmental processes' descriptions."""
    rules = project.environment_rules
    pollutants = list(rules.observations.field("pollutant").values or ())  # type: ignore[union-attr]
    classes = list(rules.buffers.by_emission_class)
    when = {"title": "Time (RFC 3339 instant or interval start/end, '..' open)", "minOccurs": 0, "maxOccurs": 1,
            "schema": {"type": "string"}}
    strings = {"type": "array", "items": {"type": "string"}, "minItems": 1}
    series_inputs = {
        "datetime": when,
        "stations": {"title": "Station fids (default all)", "minOccurs": 0, "maxOccurs": 1, "schema": strings},
        "pollutants": {"title": "Pollutants (default all)", "minOccurs": 0, "maxOccurs": 1,
                       "schema": {**strings, "items": {"type": "string", "enum": pollutants}}}}
    standard = f"{rules.air_quality.standard} grade {rules.air_quality.grade}"
    keywords = ["environment", "智慧环保"]
    return {
        ENV_LATEST: describe(
            __name__, ENV_LATEST, "LatestProcessor", {"en": "Latest value per station and pollutant",
                                                      "zh": "站点最新监测值"},
            "Per station, the latest value of each pollutant at or before an instant (or within an interval; "
            f"default: the latest stored), flagged against its {standard} limit.", keywords, series_inputs, {}),
        ENV_EXCEEDANCES: describe(
            __name__, ENV_EXCEEDANCES, "ExceedancesProcessor", {"en": f"Exceedances of {standard}",
                                                                "zh": "空气质量超标分析"},
            f"Every observation above its {standard} limit (periods the series holds: "
            f"{', '.join(rules.series.periods)}) in the window, with counts over all observations checked; "
            "limits of other periods are listed as not evaluated.", keywords, series_inputs,
            {"datetime": "2026-01-01/2026-01-31", "pollutants": ["PM2.5"]}),
        ENV_SOURCE_BUFFERS: describe(
            __name__, ENV_SOURCE_BUFFERS, "SourceBuffersProcessor", {"en": "Pollution source buffers",
                                                                     "zh": "污染源缓冲区分析"},
            "Pollution sources buffered by emission class (" + ", ".join(
                f"{k} {v:g} m" for k, v in rules.buffers.by_emission_class.items())
            + ") or industry, checked against the ecological red line and the water bodies (areas in m², "
            "EPSG:4550).", keywords,
            {"sources": {"title": "Source fids (default all)", "minOccurs": 0, "maxOccurs": 1, "schema": strings},
             "emission_classes": {"title": "Emission classes (default all)", "minOccurs": 0, "maxOccurs": 1,
                                  "schema": {**strings, "items": {"type": "string", "enum": classes}}}},
            {"emission_classes": ["key"]}),
    }
