"""A filter's SQL, translated once per filter and kept: a pure function of the layer, the filter and the CRS.

Applications send the same few filters over and over (a utility's network, a diameter range of one
material), so translating each request's tree again is wasted work. The translation is kept per process,
bounded, under the tree's exact JSON (orjson tells 1 from 1.0 and true from 1, as the translator does) and
what else decides it: the layer, the filter CRS, the parameter named in errors and the number of values the
statement already holds (the placeholders are numbered after them). A filter the translator refuses is
never kept: each request for it raises again.

What comes back is the rendered SQL text with its placeholders, which is also the filter's shape with its
literals as parameters: two filters that differ only in their literals render the same text, and the items
statement built around it is kept under that text (gis.features.queries.items_statement).
"""

from dataclasses import dataclass
from typing import Any

import orjson
from psycopg import sql

from gis.features import crs as crs_
from gis.features.cql2.to_sql import translate
from gis.layers import LayerSpec

MAX_KEPT = 1024


@dataclass(frozen=True)
class Translation:
    spec: LayerSpec  # the object it was made for: a registry loaded again makes its own
    text: bytes  # the SQL expression, placeholders %(fN)s for its values
    values: tuple[tuple[str, object], ...]  # (placeholder, value): str, numbers, dates, WKB bytes, all immutable


_kept: dict[tuple[object, ...], Translation] = {}


def _key(tree: Any, spec: LayerSpec, filter_crs: crs_.Crs, taken: int, parameter: str) -> tuple[object, ...] | None:
    try:
        document = orjson.dumps(tree)
    except TypeError:  # a value JSON cannot hold exactly (an integer past 64 bits): translated every time
        return None
    return (spec.id, filter_crs.uri, parameter, taken, document)


def translated(tree: Any, spec: LayerSpec, filter_crs: crs_.Crs, params: dict[str, object],
               parameter: str = "filter") -> bytes:
    """translate() rendered: the filter as SQL text (bytes); its values are added to `params`."""
    key = _key(tree, spec, filter_crs, len(params), parameter)
    found = _kept.get(key) if key is not None else None
    if found is None or found.spec is not spec:
        before = set(params)
        text = translate(tree, spec, filter_crs, params, parameter).as_bytes(None)
        found = Translation(spec, text, tuple((k, v) for k, v in params.items() if k not in before))
        if key is not None:
            if len(_kept) >= MAX_KEPT:
                _kept.clear()  # bounded: a burst of distinct filters starts the cache again, never grows it
            _kept[key] = found
        return text
    params.update(found.values)
    return found.text


def as_sql(text: bytes) -> sql.SQL:
    """Rendered SQL (from translated()) as a part of a composed statement."""
    return sql.SQL(text.decode())
