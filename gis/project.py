"""The project: the layer registry and every file checked against it, loaded once and held together.

One `Project` is what the service (services.app.create_app) and `gis worker` (services.processes.job_runner) run on:
the layers, the access policy, the overlap, pipeline, environment and policing rules and the sensor
thresholds. Each file is read and checked against the registry here, at start,
so a broken file stops the process naming the file and the key, and nothing is loaded again later.
(Not to be confused with a planning project, a construction_projects feature: gis.analysis.overlap.)
"""

from dataclasses import dataclass
from pathlib import Path

from gis.analysis.environment_rules import (
    EnvironmentRules,
    default_environment_rules_path,
    load_environment_rules,
)
from gis.analysis.pipeline_rules import PipelineRules, default_pipeline_rules_path, load_pipeline_rules
from gis.analysis.policing_rules import PolicingRules, default_policing_rules_path, load_policing_rules
from gis.analysis.rules import OverlapRules, default_rules_path, load_rules
from gis.layers import LayerRegistry, load_registry
from gis.security.policy import Policy, load_policy, policy_path
from gis.sensing.thresholds import Thresholds, default_thresholds_path, load_thresholds
from gis.settings import Settings


@dataclass(frozen=True)
class Project:
    registry: LayerRegistry
    policy: Policy
    overlap_rules: OverlapRules
    pipeline_rules: PipelineRules
    environment_rules: EnvironmentRules
    policing_rules: PolicingRules
    thresholds: Thresholds


def load_project(settings: Settings, policy_file: Path | None = None) -> Project:
    """The registry from settings.layers_dir, then every file that names its layers (the policy from
    `policy_file` when given, GIS_AUTH_POLICY_FILE)."""
    layers_dir = settings.layers_dir
    registry = load_registry(layers_dir, settings.styles_dir)
    return Project(
        registry=registry,
        policy=load_policy(policy_path(layers_dir, policy_file), registry),
        overlap_rules=load_rules(default_rules_path(layers_dir), registry),
        pipeline_rules=load_pipeline_rules(default_pipeline_rules_path(layers_dir), registry),
        environment_rules=load_environment_rules(default_environment_rules_path(layers_dir), registry),
        policing_rules=load_policing_rules(default_policing_rules_path(layers_dir), registry),
        thresholds=load_thresholds(default_thresholds_path(layers_dir), registry),
    )
