"""What a process may read for its caller: the layers and fields the caller's role may see.

The execution route sets it for the request; a processor captures it when the job manager hands the
processor out (still in the request's context), so an asynchronous job keeps its caller's rights.
"""

from collections.abc import Iterable
from contextvars import ContextVar
from dataclasses import dataclass

from fastapi import Request

from gis.analysis.overlap import Access
from gis.errors import NotFound
from gis.layers import LayerRegistry
from services.auth import Caller, caller_of, visible_layers, visible_rasters

# Each None outside a request (the CLI, tests of the processors): every layer, every raster, nobody audited.
CALLER_ACCESS: ContextVar[Access] = ContextVar("caller_access", default=None)
CALLER_RASTERS: ContextVar[frozenset[str] | None] = ContextVar("caller_rasters", default=None)
PROCESS_CALLER: ContextVar[Caller | None] = ContextVar("process_caller", default=None)


@dataclass(frozen=True)
class JobOwner:
    """Whose jobs a request may see: its own, or every job (administrators; code outside a request)."""

    subject: str | None
    sees_all: bool


# None outside a request (the CLI, background threads): every job.
JOB_OWNER: ContextVar[JobOwner | None] = ContextVar("job_owner", default=None)


def bind_caller(request: Request) -> None:
    """For the processes and jobs a request reaches: the caller, its layers and rasters, and whose jobs it sees."""
    caller = caller_of(request)
    CALLER_ACCESS.set(caller_access(request))
    CALLER_RASTERS.set(frozenset(visible_rasters(request)))
    PROCESS_CALLER.set(caller)
    JOB_OWNER.set(JobOwner(caller.subject, caller.role.spec.all_layers))


def caller_access(request: Request) -> dict[str, frozenset[str]]:
    """Layer id -> the fields (and fid) the caller may read, for every layer it may read."""
    return {layer_id: frozenset(("fid", *view.spec.field_names))
            for layer_id, view in visible_layers(request).items()}


def require_full_read(access: Access, registry: LayerRegistry, layer_ids: Iterable[str]) -> None:
    """A process whose results show these layers whole runs only for a caller who may read them whole."""
    if access is None:
        return
    for layer_id in layer_ids:
        allowed = access.get(layer_id)
        if allowed is None or not set(registry[layer_id].field_names) <= allowed:
            raise NotFound(f"this process reads layer '{layer_id}', which the caller may not read in full")
