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
from gis.security.policy import Policy
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


# -- a job's caller, carried to the worker that runs it ------------------------------------------------

def caller_snapshot(caller: Caller | None, access: Access, rasters: frozenset[str] | None) -> dict[str, Any]:
    """What a queued job keeps of its caller (JSON): who, which role, and what it could read when it asked."""
    return {
        "caller": None if caller is None else {
            "subject": caller.subject, "role": caller.role.name, "method": caller.method, "key_id": caller.key_id,
            "claims": dict(caller.claims)},
        "access": None if access is None else {layer: sorted(fields) for layer, fields in access.items()},
        "rasters": None if rasters is None else sorted(rasters),
    }


def restore_caller(snapshot: Mapping[str, Any], policy: Policy) -> None:
    """Sets the context a processor binds to (as bind_caller does in a request) from a caller_snapshot.

    The caller's rights are what they were when the job was accepted; a role gone from the policy since
    then runs nothing (NotFound, and the job fails saying so)."""
    found = snapshot.get("caller")
    caller = None
    if found is not None:
        role = policy.role(str(found["role"]))
        if role is None:
            raise NotFound(f"the caller's role '{found['role']}' is no longer in the access policy")
        caller = Caller(str(found["subject"]), role, str(found["method"]), found.get("key_id"),
                        dict(found.get("claims") or {}))
    access = snapshot.get("access")
    rasters = snapshot.get("rasters")
    CALLER_ACCESS.set(None if access is None else {k: frozenset(v) for k, v in access.items()})
    CALLER_RASTERS.set(None if rasters is None else frozenset(rasters))
    PROCESS_CALLER.set(caller)
