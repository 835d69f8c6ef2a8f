"""How much work a parsed CQL2 filter asks of the database, refused above set limits before any SQL exists.

The parse already bounds the text (length) and what the parser recurses on; these limits bound what the
translated statement costs: how many predicates and values it has (each one a term PostgreSQL evaluates
per row), how deeply they nest, and how many coordinates its geometry literals carry (a spatial test
against a geometry costs in proportion to its vertices, per row).
"""

from dataclasses import dataclass
from typing import Any

from gis.errors import InvalidInput


@dataclass(frozen=True)
class Cql2Limits:
    max_nodes: int = 2000
    max_depth: int = 30
    max_coordinates: int = 20_000


DEFAULT_LIMITS = Cql2Limits()


@dataclass(frozen=True)
class Complexity:
    nodes: int
    depth: int
    coordinates: int


def _coordinates(value: Any) -> int:
    """Positions in a GeoJSON coordinates array (iterative: a hostile array may nest deeply)."""
    count = 0
    stack = [value]
    while stack:
        current = stack.pop()
        if isinstance(current, list | tuple):
            if current and not isinstance(current[0], list | tuple):
                count += 1
            else:
                stack.extend(current)
    return count


def measure(tree: Any) -> Complexity:
    """Nodes, depth (the root is 1) and geometry coordinates of a CQL2 JSON tree.

    A node is an {"op"} expression, a literal, a property or a geometry; an operation's list of
    arguments and the list of IN are not levels of their own.
    """
    nodes, depth, coordinates = 0, 0, 0
    stack: list[tuple[Any, int]] = [(tree, 1)]
    while stack:
        current, level = stack.pop()
        if isinstance(current, list):  # the values of IN, or an interval's ends: at their owner's level
            stack.extend((item, level) for item in current)
            continue
        nodes += 1
        depth = max(depth, level)
        if isinstance(current, dict):
            if "coordinates" in current:
                coordinates += _coordinates(current["coordinates"])
            elif "geometries" in current and isinstance(current["geometries"], list):
                stack.extend((g, level + 1) for g in current["geometries"])
            elif "bbox" in current:
                coordinates += 2  # two corners
            elif isinstance(current.get("args"), list):
                stack.extend((a, level + 1) for a in current["args"])
            elif isinstance(current.get("interval"), list):
                stack.extend((a, level + 1) for a in current["interval"])
    return Complexity(nodes, depth, coordinates)


def check(tree: Any, limits: Cql2Limits = DEFAULT_LIMITS, parameter: str = "filter") -> None:
    """InvalidInput naming `parameter` when the filter passes one of the limits."""
    found = measure(tree)
    if found.nodes > limits.max_nodes:
        raise InvalidInput(parameter, f"too complex: {found.nodes} predicates and values, at most {limits.max_nodes}")
    if found.depth > limits.max_depth:
        raise InvalidInput(parameter, f"nested too deeply: {found.depth} levels, at most {limits.max_depth}")
    if found.coordinates > limits.max_coordinates:
        raise InvalidInput(parameter, f"its geometries have {found.coordinates} coordinates, at most "
                                      f"{limits.max_coordinates}")
