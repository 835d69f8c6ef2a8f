"""What the CQL2 tests share: the `cql2` package's evaluator as the reference, and a layer's features as served.

cql2-rs (the `cql2` package) parses CQL2 and evaluates an expression against a GeoJSON feature
(`Expr.matches`): the reference our service's answers are compared with. A NULL (or an operation the
reference cannot decide) raises there; a row is selected only when the filter is true, so that is "not
selected", as in SQL.
"""

import json
from typing import Any

import cql2
import httpx
from api_models import features

CLASS = "http://www.opengis.net/spec/cql2/1.0/conf/"
COMPARISONS = {"=", "<>", "<", "<=", ">", ">="}
ADVANCED = {"like", "between", "in"}
ARITHMETIC = {"+", "-", "*", "/", "%", "^", "div"}
LOGICAL = {"and", "or", "not"}


def reference_matches(tree: Any, feature: dict[str, Any]) -> bool:
    try:
        return bool(cql2.parse_json(json.dumps(tree)).matches(feature))
    except Exception:  # cql2-rs raises where the filter is unknown (a NULL operand): not selected
        return False


def served_features(client: httpx.Client, layer: str) -> list[dict[str, Any]]:
    """Every feature of the layer as the service serves it (all pages)."""
    found: list[dict[str, Any]] = []
    response = client.get(f"/collections/{layer}/items", params={"limit": "10000"})
    while True:
        page = features(response)
        found += response.json()["features"]
        nxt = page.link("next")
        if nxt is None:
            return found
        response = client.get(nxt.href)


def selected_ids(client: httpx.Client, layer: str, params: dict[str, str]) -> set[str] | httpx.Response:
    """The ids a filtered request selects (all pages); the response itself when it is not a 200."""
    response = client.get(f"/collections/{layer}/items", params={"limit": "10000", **params})
    ids: set[str] = set()
    while response.status_code == 200:
        ids |= {f["id"] for f in response.json()["features"]}
        nxt = features(response).link("next")
        if nxt is None:
            return ids
        response = client.get(nxt.href)
    return response


def _is_property(node: Any) -> bool:
    if isinstance(node, dict) and isinstance(node.get("interval"), list):
        return any(_is_property(end) for end in node["interval"])
    while isinstance(node, dict) and node.get("op") in ("casei", "accenti"):
        node = node["args"][0]
    return isinstance(node, dict) and "property" in node


def required_classes(tree: Any) -> set[str]:
    """The CQL2 conformance classes an expression needs (OGC 21-065, the requirements of each class)."""
    found = {"basic-cql2"}
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, list):
            stack.extend(node)
            continue
        if not isinstance(node, dict):
            continue
        op = node.get("op")
        if isinstance(op, str):
            op = op.lower()
            args = node.get("args", [])
            if op in ADVANCED:
                found.add("advanced-comparison-operators")
            elif op == "casei":
                found.add("case-insensitive-comparison")
            elif op == "accenti":
                found.add("accent-insensitive-comparison")
            elif op in ARITHMETIC:
                found.add("arithmetic")
            elif op.startswith("a_"):
                found.add("array-functions")
            elif op == "s_intersects":
                literals = [a for a in args if isinstance(a, dict) and ("type" in a or "bbox" in a)]
                if all("bbox" in a or a.get("type") == "Point" for a in literals):
                    found.add("basic-spatial-functions")
                else:
                    found.add("basic-spatial-functions-plus")
            elif op.startswith("s_"):
                found.add("spatial-functions")
            elif op.startswith("t_"):
                found.add("temporal-functions")
            elif op not in COMPARISONS | LOGICAL | {"isnull"}:
                found.add("functions")
            # a literal first, or properties on both sides: property-property (the other classes have a
            # property, or an interval of properties, first and literals after it)
            if (op in COMPARISONS | ADVANCED or op.startswith(("s_", "t_"))) and args and (
                    not _is_property(args[0]) or any(_is_property(a) for a in args[1:])):
                found.add("property-property")
            stack.extend(args if isinstance(args, list) else [])
        elif "interval" in node:
            stack.extend(node["interval"])
    return found
