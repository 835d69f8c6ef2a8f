"""Reading an OGC API Processes input the way the standard allows it to be sent."""

from collections.abc import Mapping
from typing import Any

from gis.analysis.proposal import InvalidProposal


def input_value(inputs: Mapping[str, Any], name: str) -> Any:
    """An input's value: plain, or qualified ({"value": ...}); inputs by reference (href) are refused."""
    value = inputs.get(name)
    if isinstance(value, dict) and "href" in value and "value" not in value:
        raise InvalidProposal(name, "inputs by reference (href) are not accepted; send the value")
    if isinstance(value, dict) and "value" in value and set(value) <= {"value", "mediaType", "encoding", "schema"}:
        return value["value"]
    return value
