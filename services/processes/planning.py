"""The planning processes: `overlap-check` (a proposed project against the overlap rules) and `plan-conflicts`
(conflict patches of one plan layer against another, with progress; usually a job).

`OverlapInputs` is the overlap check's input wherever it comes from: this process and
POST /api/planning/overlap-checks (services.routers.planning) both validate with it, and answer with REPORT.
"""

from pathlib import Path
from typing import Annotated, Any, ClassVar

import orjson
from pydantic import AfterValidator, Field, ValidationInfo, create_model, model_validator

from gis.analysis import overlap, plan_conflicts, report
from gis.analysis.overlap import Access
from gis.analysis.proposal import (
    Proposal,
    proposal_from_file,
    proposal_from_geojson,
)
from gis.analysis.rules import OverlapRules
from gis.errors import InvalidInput
from services.processes.base import Process, Report
from services.processes.inputs import (
    JSON_RESULT,
    Base64File,
    Format,
    GeoJSON,
    Names,
    ProcessInputs,
    names_of,
    one_of,
)
from services.processes.pygeoapi_bridge import ProcessContext

OVERLAP_CHECK = "overlap-check"
PLAN_CONFLICTS = "plan-conflicts"
MAX_PATCHES = 10_000  # patches in a job's results, largest first; all of them are in ops.plan_conflict_patches


# -- the processes -----------------------------------------------------------------------------------

REPORT = Report(report.to_json, report.to_geojson, report.to_html)


def _fid(value: str) -> str:
    if not value:
        raise ValueError("the fid of a construction project, as a string")
    return value


class OverlapInputs(ProcessInputs):
    """An overlap check's input, wherever it comes from (the process's inputs, the planning API's JSON body, form
    fields or query): exactly one of geometry, file and project, and what the check is asked for."""

    qualified: ClassVar[frozenset[str]] = frozenset({"file"})

    geometry: GeoJSON | None = Field(None, title="Proposal (GeoJSON)", description="Polygon, MultiPolygon, Feature "
                                     "or FeatureCollection; x = longitude/easting first")
    file: Base64File | None = Field(None, title="Proposal file", description="GeoPackage, zipped Shapefile, GeoJSON "
                                    "or KML, base64 ({\"value\": ..., \"mediaType\": ...})")
    filename: str | None = Field(None, title="File name", description="The file's name (its extension is checked)")
    project: Annotated[str, AfterValidator(_fid)] | None = Field(None, title="Construction project fid")
    crs: str | None = Field(None, title="CRS of the coordinates", description="EPSG:NNNN, its OGC URI, CRS84 or "
                            "GCJ-02", json_schema_extra={"default": "OGC:CRS84"})
    proposed_use: str | None = Field(None, title="Proposed use (GB 50137)")
    datetime: str | None = Field(None, title="Plans in force at",
                                 description="An instant or a date (future plans too)")
    rules: Names | None = Field(None, title="Rules to check (default all)")
    format: Format = Field("json", title="Report format")

    @model_validator(mode="after")
    def _one_proposal(self, info: ValidationInfo) -> "OverlapInputs":
        given = [k for k in ("geometry", "file", "project") if getattr(self, k) is not None]
        if len(given) != 1:
            where = (info.context or {}).get("where", "inputs")
            raise InvalidInput(where, "give exactly one of geometry, file and project"
                               + (f" (got {', '.join(given)})" if given else ""))
        return self

    def proposal(self, city_extent: tuple[float, float, float, float], scratch_dir: Path | None) -> Proposal | None:
        """The proposal from the geometry or the file (None for a project, which the caller loads); an uploaded file
        is read in `scratch_dir`."""
        if self.geometry is not None:
            return proposal_from_geojson(self.geometry, crs=self.crs, city_extent=city_extent,
                                         proposed_use=self.proposed_use)
        if self.file is not None:
            return proposal_from_file(self.file.content, self.filename, media_type=self.file.media_type, crs=self.crs,
                                      city_extent=city_extent, proposed_use=self.proposed_use, scratch_dir=scratch_dir)
        return None

    def check_project(self, rules: OverlapRules, access: Access) -> str:
        """The project's fid, if the caller may name proposals by fid (else as for a project that does not exist)."""
        fid = str(self.project)
        if not overlap.project_readable(rules, access):
            raise overlap.no_project(fid)
        return fid


class OverlapCheckProcessor(Process):
    """A proposal (GeoJSON, an uploaded file, or a construction project's fid) against the overlap rules."""

    id = OVERLAP_CHECK
    title = ("Overlap check of a proposed project", "建设项目用地冲突检测")
    keywords = ("overlap", "planning", "多规合一")
    example_inputs: ClassVar = {"geometry": {"type": "Polygon", "coordinates": [[
        [123.40, 41.75], [123.402, 41.75], [123.402, 41.752], [123.40, 41.752], [123.40, 41.75]]]},
        "proposed_use": "R"}
    Inputs = OverlapInputs
    Outputs = create_model("OverlapOutputs", report=(JSON_RESULT, Field(title="Overlap report")))

    @classmethod
    def inputs(cls, context: ProcessContext) -> type[ProcessInputs]:
        rules = context.rules
        return create_model("OverlapInputsDescribed", __base__=OverlapInputs, proposed_use=(
            one_of(rules.use_codes) | None, Field(None, title="Proposed use (GB 50137)")), rules=(
            names_of(r.id for r in rules.rules) | None, Field(None, title="Rules to check (default all)")))

    @classmethod
    def summary(cls, context: ProcessContext) -> dict[str, str]:
        return {"en": "Checks a proposal (GeoJSON, an uploaded GeoPackage / zipped Shapefile / GeoJSON / KML, or a "
                      "construction project's fid) against " + ", ".join(r.id for r in context.rules.rules)
                      + ": per rule conflict or not, overlap area (m², EPSG:4550), share, the features hit and the "
                      "overlap geometries.",
                "zh": "对拟建项目检测生态保护红线、永久基本农田、城镇开发边界、控规用地性质、管线保护范围与水系冲突。"}


    def run(self, inputs: OverlapInputs) -> tuple[str, Any]:
        rules = self.context.rules
        with self.connection() as conn:
            proposal = inputs.proposal(self.context.settings.city_extent, self.context.settings.temp_dir)
            if proposal is None:
                proposal = overlap.load_project(conn, rules, inputs.check_project(rules, self.access))
            found = overlap.check(conn, rules, proposal, as_of=inputs.datetime, use=inputs.proposed_use,
                                  only=inputs.rules, access=self.access)
            self.audit_reads(conn, {r.layer.id: len(r.features) for r in found.results
                                    if r.status != "not_evaluated"})
        return REPORT.answer(found, inputs.format)


class PlanConflictsInputs(ProcessInputs):
    check: str = Field(title="Check")
    datetime: str | None = Field(None, title="Plans in force at")
    min_area_m2: float | None = Field(None, title="Sliver threshold (m²)", ge=0)
    patches: bool = Field(True, title="Include the patches (GeoJSON)")


class PlanConflictsProcessor(Process):
    """Conflict patches of one plan layer against another, with progress; usually run asynchronously."""

    id = PLAN_CONFLICTS
    title = ("Plan-against-plan conflict patches", "多规冲突图斑分析")
    keywords = ("conflict", "planning", "冲突图斑")
    job_control = ("async-execute", "sync-execute")
    Inputs = PlanConflictsInputs
    Outputs = create_model("PlanConflictsOutputs", result=(JSON_RESULT, Field(title="Summary and patches")))

    @classmethod
    def inputs(cls, context: ProcessContext) -> type[ProcessInputs]:
        return create_model("PlanConflictsInputsDescribed", __base__=PlanConflictsInputs, check=(
            one_of(c.id for c in context.rules.plan_conflicts), Field(title="Check")))

    @classmethod
    def summary(cls, context: ProcessContext) -> dict[str, str]:
        return {"en": "Conflict patches between two plan layers (" + ", ".join(
                    c.id for c in context.rules.plan_conflicts) + ") with area, class and a suggested disposal "
                      "(keep / withdraw / deduct); slivers dropped and counted.",
                "zh": "两规叠加冲突图斑：面积、类别与处置建议（保留 / 退出 / 扣除）。"}

    @classmethod
    def example(cls, context: ProcessContext) -> dict[str, Any]:
        checks = context.rules.plan_conflicts
        return {"check": checks[0].id if checks else "", "min_area_m2": 50}

    def run(self, inputs: PlanConflictsInputs) -> tuple[str, Any]:
        context = self.context
        check = next((c for c in context.rules.plan_conflicts if c.id == inputs.check), None)
        if check is not None:
            self.require_full_read((check.a.layer, check.b.layer))
        job_id = self.job_id
        manager = self.manager

        def progress(percent: int, message: str) -> None:
            if manager is not None and job_id is not None:
                manager.update_job(job_id, {"progress": max(5, min(percent, 99)), "message": message})

        def cancelled() -> bool:
            return manager is not None and job_id is not None and manager.is_dismissed(job_id)

        summary = plan_conflicts.run_plan_conflicts(
            context.database_url, context.rules, inputs.check, run_id=job_id, as_of=inputs.datetime,
            min_area_m2=inputs.min_area_m2, workers=2, progress=progress, cancelled=cancelled)
        result: dict[str, Any] = {"summary": summary.as_dict()}
        with self.connection() as conn:
            self.audit_reads(conn, {summary.a_layer: summary.a_features, summary.b_layer: summary.b_features})
            if inputs.patches:
                result["patches"] = orjson.loads(plan_conflicts.patches_geojson(conn, summary.run_id, MAX_PATCHES))
        if inputs.patches:
            result["patches_truncated"] = summary.patches > MAX_PATCHES
        result["patches_table"] = f"ops.plan_conflict_patches WHERE run_id = '{summary.run_id}'"
        return "application/json", result


