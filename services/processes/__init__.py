"""The processes we offer through OGC API - Processes, one module per domain (planning, pipeline, environment,
policing, raster), on one base (base.Process) and pygeoapi's machinery (pygeoapi_bridge).

Registration is discovery: every `Process` subclass with an `id` defined in a module of this package is offered,
so adding a process is adding a module (docs/architecture.md, "A process, and adding one").
"""

import importlib
import pkgutil
from typing import Any

from gis.analysis import overlap
from gis.analysis.rules import OverlapRules
from gis.db.cluster import database_url
from gis.db.pool import make_sync_pool
from gis.errors import ConfigError
from gis.project import Project
from gis.security import inference
from gis.security.policy import Policy
from gis.sensing import readings
from gis.settings import Settings
from services.processes.base import Process
from services.processes.pygeoapi_bridge import Bridge, ProcessContext


def process_classes(package: str = __name__) -> list[type[Process]]:
    """The processes defined in the modules of `package` (this one by default), by module name and then in the
    order each module defines them; two with one id stop the start."""
    found: dict[str, type[Process]] = {}
    root = importlib.import_module(package)
    for info in sorted(pkgutil.iter_modules(root.__path__), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{package}.{info.name}")
        for value in vars(module).values():
            if not (isinstance(value, type) and issubclass(value, Process) and value.__module__ == module.__name__
                    and value.id):
                continue
            if value.id in found:
                raise ConfigError(f"process '{value.id}' is defined twice: {found[value.id].__module__}."
                                  f"{found[value.id].__qualname__} and {module.__name__}.{value.__qualname__}")
            found[value.id] = value
    return list(found.values())


def make_bridge(settings: Settings, project: Project, application_name: str = "gis-processes",
                package: str = __name__) -> Bridge:
    """Every process we offer, over a pool of its own (not opened): the service's and `gis worker`'s. Each one's
    inputs model is built here, once."""
    url = database_url(settings)
    pool = make_sync_pool(url, settings, application_name)
    context = ProcessContext(settings, project, url, pool)
    processes: dict[str, dict[str, Any]] = {}
    for cls in process_classes(package):
        context.inputs[cls.id] = cls.inputs(context)
        processes[cls.id] = cls.describe(context, context.inputs[cls.id])
    return Bridge(context, processes)


def check_derive(policy: Policy, rules: OverlapRules) -> None:
    """The policy's `derive` entries name dependencies the code has, in modes they support (else the service does
    not start, naming the role and the entry)."""
    known = overlap.dependencies(rules) | {readings.SENSOR_CHECKS.id: readings.SENSOR_CHECKS}
    inference.check_declared({name: role.spec.derive for name, role in policy.roles.items()}, known)
