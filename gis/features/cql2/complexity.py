"""How much work a parsed CQL2 filter asks of the database, refused above set limits before any SQL exists.

The parsers already bound the text (length) and their own recursion; these limits bound what the
translated statement costs: how many predicates and values it has (each one a term PostgreSQL evaluates
per row), how deeply they nest, and how many coordinates its geometry literals carry (a spatial test
against a geometry costs in proportion to its vertices, per row).
"""

from collections.abc import Iterator
from dataclasses import dataclass, fields, is_dataclass

import shapely

from gis.features.cql2 import ast
from gis.features.errors import InvalidQuery


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


def _children(node: object) -> Iterator[object]:
    """The tree nodes directly under `node` (tuples of operands included; plain values are not nodes)."""
    if not is_dataclass(node):
        return
    for item in fields(node):
        value = getattr(node, item.name)
        for child in value if isinstance(value, tuple) else (value,):
            if is_dataclass(child):
                yield child


def _coordinates(node: object) -> int:
    if isinstance(node, ast.Geometry):
        return int(shapely.get_num_coordinates(shapely.from_wkb(node.wkb)))
    if isinstance(node, ast.BBox):
        return 2  # two corners
    return 0


def measure(node: ast.Node) -> Complexity:
    """Nodes, depth (the root is 1) and geometry coordinates of a tree; iterative, so any depth is safe."""
    nodes, depth, coordinates = 0, 0, 0
    stack: list[tuple[object, int]] = [(node, 1)]
    while stack:
        current, level = stack.pop()
        nodes += 1
        depth = max(depth, level)
        coordinates += _coordinates(current)
        stack.extend((child, level + 1) for child in _children(current))
    return Complexity(nodes, depth, coordinates)


def check(node: ast.Node, limits: Cql2Limits = DEFAULT_LIMITS, parameter: str = "filter") -> None:
    """InvalidQuery naming `parameter` when the filter passes one of the limits."""
    found = measure(node)
    if found.nodes > limits.max_nodes:
        raise InvalidQuery(parameter, f"too complex: {found.nodes} predicates and values, at most {limits.max_nodes}")
    if found.depth > limits.max_depth:
        raise InvalidQuery(parameter, f"nested too deeply: {found.depth} levels, at most {limits.max_depth}")
    if found.coordinates > limits.max_coordinates:
        raise InvalidQuery(parameter, f"its geometries have {found.coordinates} coordinates, at most "
                                      f"{limits.max_coordinates}")
