"""What a process may read for its caller: the layers and fields the caller's role may see.

The execution route sets it for the request; a processor captures it when the job manager hands the
processor out (still in the request's context), so an asynchronous job keeps its caller's rights.
"""

from collections.abc import Iterable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from fastapi import Request

from gis.analysis.overlap import Access
from gis.errors import NotFound
from gis.layers import LayerRegistry
from gis.security.inference import Sight, row_limited
from gis.security.policy import Policy, readable
from services.auth.credentials import Caller, caller_of
from services.auth.visibility import visible_rasters

# Each None outside a request (the CLI, tests of the processors): every layer, every raster, nobody audited.
CALLER_ACCESS: ContextVar[Access] = ContextVar("caller_access", default=None)
CALLER_RASTERS: ContextVar[frozenset[str] | None] = ContextVar("caller_rasters", default=None)
PROCESS_CALLER: ContextVar[Caller | None] = ContextVar("process_caller", default=None)


@dataclass(frozen=True)
class JobOwner:
    """Whose jobs a request may see: its own, or every job (administrators; code outside a request).

    Anonymous callers share no identity, so an anonymous job is reached only by its id, which is random and
    unguessable (services.processes.pygeoapi_bridge): the id is the capability. They list no jobs at all."""

    subject: str | None
    sees_all: bool
    anonymous: bool = False

    @property
    def lists(self) -> bool:
        """Whether listing /jobs may show this caller anything (its own jobs, or all of them)."""
        return self.sees_all or not self.anonymous


# None outside a request (the CLI, background threads): every job.
JOB_OWNER: ContextVar[JobOwner | None] = ContextVar("job_owner", default=None)


def bind_caller(request: Request) -> None:
    """For the processes and jobs a request reaches: the caller, its layers and rasters, and whose jobs it sees."""
    caller = caller_of(request)
    CALLER_ACCESS.set(caller_access(request))
    CALLER_RASTERS.set(frozenset(visible_rasters(request)))
    PROCESS_CALLER.set(caller)
    JOB_OWNER.set(JobOwner(caller.subject, caller.role.spec.all_layers, caller.anonymous))


def caller_access(request: Request) -> Sight:
    """Layer id -> the fields (and fid) the caller may read, for every layer it may read; with the layers it
    sees only some rows of and its role's `derive` modes (gis.security.inference)."""
    return caller_of(request).role.sight


def require_full_read(access: Access, registry: LayerRegistry, layer_ids: Iterable[str],
                      rows_applied: Iterable[str] = ()) -> None:
    """A process whose results rest on these layers whole runs only for a caller who may read them whole: every
    field, and every row (but on the layers in `rows_applied`, whose row rule the process applies itself).

    The refusal names no layer the caller may not read (it answers as for a layer that does not exist)."""
    if access is None:
        return
    applied = frozenset(rows_applied)
    for layer_id in layer_ids:
        if layer_id not in access:
            raise NotFound("this process reads a layer the caller may not read")
        if not set(registry[layer_id].field_names) <= access[layer_id]:
            raise NotFound(f"this process reads layer '{layer_id}', which the caller may not read in full")
        if layer_id not in applied and row_limited(access, layer_id):
            raise NotFound(f"this process reads every row of layer '{layer_id}'; the caller may read some of them")


# -- a job's caller, carried to the worker that runs it ------------------------------------------------

def caller_snapshot(caller: Caller | None) -> dict[str, Any]:
    """What a queued job keeps of its caller (JSON): who, with which role and claims. None outside a request."""
    return {"caller": None if caller is None else {
        "subject": caller.subject, "role": caller.role.name, "method": caller.method, "key_id": caller.key_id,
        "claims": dict(caller.claims)}}


def restore_caller(snapshot: Mapping[str, Any], policy: Policy, registry: LayerRegistry) -> None:
    """Sets the context a processor binds to from a caller_snapshot, as bind_caller does in a request: the
    caller, what its role may read now (the policy the worker runs with) and its rasters. A role gone from the
    policy since the job was accepted runs nothing (NotFound, and the job fails saying so)."""
    found = snapshot.get("caller")
    if found is None:  # queued outside a request: every layer, every raster, nobody audited
        CALLER_ACCESS.set(None)
        CALLER_RASTERS.set(None)
        PROCESS_CALLER.set(None)
        return
    role = policy.role(str(found["role"]))
    if role is None:
        raise NotFound(f"the caller's role '{found['role']}' is no longer in the access policy")
    caller = Caller(str(found["subject"]), role, str(found["method"]), found.get("key_id"),
                    dict(found.get("claims") or {}))
    CALLER_ACCESS.set(role.sight)
    CALLER_RASTERS.set(frozenset(rid for rid, spec in registry.rasters.items() if readable(role.spec, spec)))
    PROCESS_CALLER.set(caller)
