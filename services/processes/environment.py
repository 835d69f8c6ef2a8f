"""OGC API - Processes over the environmental analyses (gis.analysis.environment): env-latest,
env-exceedances and env-source-buffers, run by the same pygeoapi machinery and job manager as
services.processes (which registers them). Each answers JSON (default), GeoJSON or an HTML page with a map.
"""

from typing import Annotated, Any, ClassVar

import psycopg
from pydantic import Field, create_model

from gis.analysis import environment
from gis.analysis.environment_rules import EnvironmentRules
from gis.analysis.place_report import PlacesResult
from services.processes.base import PlacesProcess, places_report
from services.processes.inputs import Format, ProcessInputs, names_of
from services.processes.pygeoapi_bridge import ProcessContext

ENV_LATEST = "env-latest"
ENV_EXCEEDANCES = "env-exceedances"
ENV_SOURCE_BUFFERS = "env-source-buffers"
PROCESS_IDS = (ENV_LATEST, ENV_EXCEEDANCES, ENV_SOURCE_BUFFERS)


def _series_inputs(name: str, rules: EnvironmentRules) -> type[ProcessInputs]:
    pollutants = list(rules.observations.known_field("pollutant").values or ())
    return create_model(
        name, __base__=ProcessInputs,
        datetime=(str | None, Field(None, title="Time (RFC 3339 instant or interval start/end, '..' open)")),
        stations=(FIDS | None, Field(None, title="Station fids (default all)")),
        pollutants=(names_of(pollutants, min_items=1, split=False) | None,
                    Field(None, title="Pollutants (default all)")),
        format=(Format, "json"))


FIDS = Annotated[list[str], Field(min_length=1)]


def _standard(rules: EnvironmentRules) -> str:
    return f"{rules.air_quality.standard} grade {rules.air_quality.grade}"


class _Environment(PlacesProcess[EnvironmentRules]):
    rules_field = "environment_rules"
    keywords = ("environment", "智慧环保")
    report = places_report(environment.STYLES, environment.LEGEND)


class LatestProcessor(_Environment):
    id = ENV_LATEST
    title = ("Latest value per station and pollutant", "站点最新监测值")
    abstract = ("Per station, the latest value of each pollutant at or before an instant (or within an interval; "
                "default: the latest stored), flagged against its {rules.air_quality.standard} grade "
                "{rules.air_quality.grade} limit.")

    @classmethod
    def inputs(cls, context: ProcessContext) -> type[ProcessInputs]:
        """The series' inputs (this process's and ExceedancesProcessor's), in a model named after the process."""
        return _series_inputs(f"{cls.__name__.removesuffix('Processor')}Inputs", cls.rules_in(context))

    def reads(self, inputs: Any) -> tuple[str, ...]:
        return self.rules.stations.id, self.rules.observations.id

    def analyse(self, conn: psycopg.Connection, inputs: Any) -> PlacesResult:
        return environment.latest(conn, self.rules, datetime=inputs.datetime, stations=inputs.stations,
                                  pollutants=inputs.pollutants)


class ExceedancesProcessor(LatestProcessor):
    id = ENV_EXCEEDANCES
    example_inputs: ClassVar = {"datetime": "2026-01-01/2026-01-31", "pollutants": ["PM2.5"]}

    @classmethod
    def summary(cls, context: ProcessContext) -> str:
        rules = cls.rules_in(context)
        return (f"Every observation above its {_standard(rules)} limit (periods the series holds: "
                f"{', '.join(rules.series.periods)}) in the window, with counts over all observations checked; "
                "limits of other periods are listed as not evaluated.")

    @classmethod
    def titles(cls, context: ProcessContext) -> tuple[str, str]:
        return f"Exceedances of {_standard(cls.rules_in(context))}", "空气质量超标分析"

    def analyse(self, conn: psycopg.Connection, inputs: Any) -> PlacesResult:
        return environment.exceedances(conn, self.rules, datetime=inputs.datetime, stations=inputs.stations,
                                       pollutants=inputs.pollutants)

    def counted(self, result: PlacesResult) -> int | None:
        return int(result.summary["observations_checked"])


class SourceBuffersProcessor(_Environment):
    id = ENV_SOURCE_BUFFERS
    title = ("Pollution source buffers", "污染源缓冲区分析")
    example_inputs: ClassVar = {"emission_classes": ["key"]}

    @classmethod
    def inputs(cls, context: ProcessContext) -> type[ProcessInputs]:
        return create_model(
            "SourceBuffersInputs", __base__=ProcessInputs,
            sources=(FIDS | None, Field(None, title="Source fids (default all)")),
            emission_classes=(names_of(cls.rules_in(context).buffers.by_emission_class, min_items=1,
                                       split=False) | None,
                              Field(None, title="Emission classes (default all)")),
            format=(Format, "json"))

    @classmethod
    def summary(cls, context: ProcessContext) -> str:
        return ("Pollution sources buffered by emission class (" + ", ".join(
            f"{k} {v:g} m" for k, v in cls.rules_in(context).buffers.by_emission_class.items())
            + ") or industry, checked against the ecological red line and the water bodies (areas in m², "
            "EPSG:4550).")

    def reads(self, inputs: Any) -> tuple[str, ...]:
        return self.rules.sources.id, self.rules.redline.id, self.rules.water.id

    def analyse(self, conn: psycopg.Connection, inputs: Any) -> PlacesResult:
        return environment.source_buffers(conn, self.rules, sources=inputs.sources,
                                          emission_classes=inputs.emission_classes)

    def counted(self, result: PlacesResult) -> int | None:
        return int(result.summary["sources"])


PROCESSES = (LatestProcessor, ExceedancesProcessor, SourceBuffersProcessor)
