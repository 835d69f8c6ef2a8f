"""What a process may read for its caller: the layers and fields the caller's role may see.

The execution route sets it for the request; a processor captures it when the job manager hands the
processor out (still in the request's context), so an asynchronous job keeps its caller's rights.
"""

from collections.abc import Iterable
from contextvars import ContextVar

from fastapi import Request

from gis.analysis.overlap import Access
from gis.errors import NotFound
from gis.layers import LayerRegistry
from services.auth import visible_layers

CALLER_ACCESS: ContextVar[Access] = ContextVar("caller_access", default=None)


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
