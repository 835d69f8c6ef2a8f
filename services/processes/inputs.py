"""A process's inputs and outputs as pydantic models: their validation is the process's check of what it was
sent (a 400 naming the input), their JSON Schema its OGC API Processes description.

The types here are the kinds of input our processes take; a field's `title` and `description` become the
input's, its schema (without them) the input's `schema`, and a field with a default is optional (minOccurs 0).
"""

import base64
import binascii
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, WithJsonSchema

from gis.analysis.proposal import MAX_UPLOAD_BYTES
from gis.errors import InvalidInput

_QUALIFIED = frozenset({"value", "mediaType", "encoding", "schema"})


def input_value(inputs: Mapping[str, Any], name: str) -> Any:
    """An input's value: plain, or qualified ({"value": ...}); inputs by reference (href) are refused."""
    return _unwrapped(name, inputs.get(name))


def _unwrapped(name: str, value: Any) -> Any:
    if isinstance(value, dict) and "href" in value and "value" not in value:
        raise InvalidInput(name, "inputs by reference (href) are not accepted; send the value")
    if isinstance(value, dict) and "value" in value and set(value) <= _QUALIFIED:
        return value["value"]
    return value


class ProcessInputs(BaseModel):
    """The base of every process's inputs: no input it does not declare, each of the type it declares (strictly:
    "3" is not a number), numbers within their bounds. A null input counts as one left out."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, arbitrary_types_allowed=True)

    # inputs read in their qualified form ({"value": ..., "mediaType": ...}), which their own type unwraps
    qualified: ClassVar[frozenset[str]] = frozenset()


def parse_inputs(model: type[ProcessInputs], data: Any, where: str = "inputs", unwrap: bool = True) -> Any:
    """`data` (an execute request's inputs, or with `unwrap` False plain values) validated by `model`, or
    InvalidInput naming the input at fault (`where` for the whole of them)."""
    if not isinstance(data, dict):
        raise InvalidInput(where, "an object of named inputs")
    values = {name: value if name in model.qualified or not unwrap else _unwrapped(name, value)
              for name, value in data.items()}
    try:
        return model.model_validate({k: v for k, v in values.items() if v is not None}, context={"where": where})
    except ValidationError as exc:
        raise _invalid(model, exc) from None


def _invalid(model: type[ProcessInputs], exc: ValidationError) -> InvalidInput:
    error = exc.errors(include_url=False, include_context=False)[0]
    loc = error.get("loc") or ()
    name = str(loc[0]) if loc else "inputs"
    if error["type"] == "extra_forbidden":
        return InvalidInput(name, f"unknown input; this process takes {', '.join(sorted(_declared(model)))}")
    where = "".join(f"[{p}]" for p in loc[1:] if not isinstance(p, str) or not p.startswith("function-"))
    message = str(error["msg"]).removeprefix("Value error, ")[:200]
    return InvalidInput(name, f"{where}: {message}" if where else message)


def _declared(model: type[ProcessInputs]) -> list[str]:
    return list(model.model_fields)


# -- the kinds of input ------------------------------------------------------------------------------------

def _split(value: Any) -> Any:
    """A list of names may come as one comma-separated string."""
    return [v.strip() for v in value.split(",") if v.strip()] if isinstance(value, str) else value


Names = Annotated[list[str], BeforeValidator(_split)]
"""A list of names (ids, fids); one comma-separated string is taken too."""

GeoJSON = Annotated[Any, WithJsonSchema({"type": "object", "contentMediaType": "application/geo+json"})]
"""A GeoJSON object, read (and checked, naming the input) by the analysis that takes it."""

Bbox = Annotated[list[float], Field(min_length=4, max_length=4)]
"""minlon,minlat,maxlon,maxlat as four numbers."""


def one_of(values: Iterable[str], default: str | None = None) -> Any:
    """A string the description lists the choices of (from a rules file or the registry); the analysis checks it,
    so an unknown one is refused in its words (or, for a layer, answered as a layer that does not exist)."""
    schema: dict[str, Any] = {"type": "string", "enum": list(values)}
    if default is not None:
        schema["default"] = default
    return Annotated[str, WithJsonSchema(schema)]


def names_of(values: Iterable[str], min_items: int | None = None, split: bool = True) -> Any:
    """A list of names the description lists the choices of (checked by the analysis, as `one_of`); with `split`,
    one comma-separated string is taken too."""
    schema: dict[str, Any] = {"type": "array", "items": {"type": "string", "enum": list(values)}}
    if min_items is not None:
        schema["minItems"] = min_items
    return Annotated[Names if split else list[str], WithJsonSchema(schema)]


def _json_by_default(value: Any) -> Any:
    return value or "json"  # "" (as a form sends it) is the default


def formats(*names: str) -> Any:
    """The output format input: one of `names`, the first by default."""
    return Annotated[Literal[names], BeforeValidator(_json_by_default), Field(title="Output format")]


FORMATS = ("json", "geojson", "html")
Format = formats(*FORMATS)


@dataclass(frozen=True)
class Upload:
    """A file sent as an input: its bytes and, when the request says it, its media type."""

    content: bytes
    media_type: str | None = None


def _upload(value: Any) -> Any:
    """A file input: base64 text, or {"value": <base64>, "mediaType": ...}; at most MAX_UPLOAD_BYTES."""
    if isinstance(value, Upload):
        return value
    media_type = value.get("mediaType") if isinstance(value, dict) else None
    encoded = _unwrapped("file", value)
    if not isinstance(encoded, str):
        raise InvalidInput("file", "the file's bytes as a base64 string (or {\"value\": ..., \"mediaType\": ...})")
    if len(encoded) > MAX_UPLOAD_BYTES * 4 // 3 + 4:
        raise InvalidInput("file", f"larger than {MAX_UPLOAD_BYTES:,} bytes")
    try:
        content = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidInput("file", "not valid base64") from None
    return Upload(content, media_type if isinstance(media_type, str) else None)


Base64File = Annotated[Upload, BeforeValidator(_upload),
                       WithJsonSchema({"type": "string", "contentEncoding": "base64"})]


# -- the description ---------------------------------------------------------------------------------------

JSON_RESULT = Annotated[dict[str, Any], WithJsonSchema({"type": "object", "contentMediaType": "application/json"})]


class Result(BaseModel):
    """The one output of most processes: the result, in the format asked for."""

    result: JSON_RESULT = Field(title="Result")


def described(model: type[BaseModel], occurs: bool = True) -> dict[str, dict[str, Any]]:
    """The OGC description of a model's fields (inputs, or with `occurs` False outputs): per field its title,
    description, minOccurs/maxOccurs (required or not, one value) and schema."""
    schema = model.model_json_schema()
    required = set(schema.get("required", ()))
    found: dict[str, dict[str, Any]] = {}
    for name, prop in schema.get("properties", {}).items():
        prop = dict(prop)
        entry: dict[str, Any] = {"title": prop.pop("title", name)}
        if "description" in prop:
            entry["description"] = prop.pop("description")
        options = [s for s in prop.pop("anyOf", ()) if s != {"type": "null"}]
        if len(options) == 1:  # X | None: optional, not a second type
            prop = {**options[0], **prop}
        elif options:
            prop["anyOf"] = options
        if prop.get("default", 0) is None:
            del prop["default"]
        if occurs:
            entry |= {"minOccurs": int(name in required), "maxOccurs": 1}
        found[name] = {**entry, "schema": prop}
    return found

