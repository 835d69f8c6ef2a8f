"""Reading the web map's MapLibre style (/map/style.json) in tests: which collection each style layer draws, and
from which source, whether that source holds one collection's tiles or the dataset's (one MVT layer each)."""

from typing import Any


def drawn_by(layer: dict[str, Any]) -> str | None:
    """The collection a style layer draws: a vector layer's source-layer (the MVT layer, named after its
    collection), a raster layer's source; None for the background."""
    return layer.get("source-layer", layer.get("source"))


def drawn_collections(style: dict[str, Any]) -> list[str]:
    """Every collection the style draws, once each, bottom first."""
    found = (drawn_by(layer) for layer in style["layers"])
    return list(dict.fromkeys(layer_id for layer_id in found if layer_id is not None))


def source_of(style: dict[str, Any], layer_id: str) -> dict[str, Any] | None:
    """The source the collection's style layers read (None if the style does not draw it)."""
    names = {layer["source"] for layer in style["layers"] if drawn_by(layer) == layer_id}
    assert len(names) <= 1, (layer_id, names)
    return style["sources"][names.pop()] if names else None
