"""Every OGC CQL2 example and abstract-test expression (tests/cql2_ogc/) against the running service.

Each expression's property names are mapped onto a public layer's queryables of the type the expression
uses them as, and the service's answer (cql2-text and cql2-json) is compared with the `cql2` package's
evaluator over the layer's features as served. An expression needing only the classes /conformance
declares must be answered so; one needing another class (functions, arithmetic, arrays) is a 400 naming
`filter`, never a 500.
"""

import json
from pathlib import Path
from typing import Any

import cql2
import httpx
import pytest
from api_models import error
from cql2_reference import CLASS, reference_matches, required_classes, selected_ids, served_features

from gis.features.cql2 import CONFORMANCE
from gis.features.queryables import queryables
from gis.layers import LayerRegistry

BUNDLE = json.loads((Path(__file__).parent / "cql2_ogc" / "bundle.json").read_text())
DECLARED = {uri.removeprefix(CLASS) for uri in CONFORMANCE}
LAYERS = ("buildings", "land_use_plan", "observations", "roads")
# The abstract tests' placeholder names say their type where the expression does not (property-property).
NAME_KINDS = {"textfield": "text", "intfield": "integer", "floatfield": "number", "ts_start": "timestamp",
              "geom": "geometry"}


def _cases() -> list[tuple[str, str, str | None, set[str]]]:
    """(name, text, json or None, classes) for every example and abstract test expression."""
    found = []
    for example in BUNDLE["examples"]:
        tree = cql2.parse_text(example["text"]).to_json()
        found.append((example["name"], example["text"], example["json"], required_classes(tree)))
    for i, test in enumerate(BUNDLE["ats"]):
        tree = cql2.parse_text(test["text"]).to_json()
        found.append((f"ats{i:03d}-{test['class']}", test["text"], None, required_classes(tree) | {test["class"]}))
    return found


CASES = _cases()


def literal_kind(node: Any) -> str | None:
    if isinstance(node, bool):
        return "boolean"
    if isinstance(node, int | float):
        return "number"
    if isinstance(node, str):
        return "text"
    if isinstance(node, dict):
        if node.get("op") in ("casei", "accenti"):
            return "text"
        if "date" in node:
            return "date"
        if "timestamp" in node:
            return "timestamp"
    return None


def property_kinds(tree: Any) -> dict[str, str]:
    """Each property's type as the expression uses it."""
    kinds: dict[str, str] = {}

    def props(node: Any) -> list[str]:
        while isinstance(node, dict) and node.get("op") in ("casei", "accenti"):
            node = node["args"][0]
        return [node["property"]] if isinstance(node, dict) and "property" in node else []

    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, list):
            stack.extend(node)
            continue
        if not isinstance(node, dict):
            continue
        op = str(node.get("op", "")).lower()
        args = node.get("args", [])
        flat = [a for arg in args for a in (arg if isinstance(arg, list) else [arg])]
        names = [n for a in flat for n in props(a)]
        if op.startswith("s_"):
            want: str | None = "geometry"
        elif op.startswith("t_"):
            want = "timestamp"
            names += [n for a in flat if isinstance(a, dict) for e in a.get("interval", []) for n in props(e)]
        elif op == "like" or any(isinstance(a, dict) and a.get("op") in ("casei", "accenti") for a in args):
            want = "text"
        elif op == "between":
            want = "number"  # BETWEEN takes numeric expressions (OGC 21-065's grammar)
        else:
            want = next((k for k in map(literal_kind, flat) if k), None)
        for name in names:
            if op == "between":  # its grammar decides, whatever a placeholder's name says ('textfield BETWEEN')
                kinds[name] = "number"
            elif op == "isnull":
                kinds.setdefault(name, NAME_KINDS.get(name, "text"))
            else:
                kinds.setdefault(name, NAME_KINDS.get(name, want or "number"))
        stack.extend(args if isinstance(args, list) else [])
    return kinds


def pools(registry: LayerRegistry, layer: str) -> dict[str, list[str]]:
    table = queryables(registry[layer])
    by_kind: dict[str, list[str]] = {}
    for name, q in table.items():
        by_kind.setdefault(q.kind, []).append(name)
    return {
        "text": [n for n in by_kind.get("text", []) if n != "id"] + ["id"],
        "integer": by_kind.get("integer", []),
        "number": by_kind.get("number", []) + by_kind.get("integer", []),
        "date": by_kind.get("date", []),
        "timestamp": [n for n in by_kind.get("timestamp", []) if n != "valid_to"] + ["valid_to"],
        "geometry": ["geometry"],
        "boolean": by_kind.get("boolean", []),
    }


def mapping(registry: LayerRegistry, tree: Any) -> tuple[str, dict[str, str]] | None:
    """(layer, {name in the expression: queryable}) on the first layer with queryables of every type used."""
    kinds = property_kinds(tree)
    for layer in LAYERS:
        available = pools(registry, layer)
        if all(available[kind] for kind in kinds.values()):
            used: dict[str, int] = {}
            names = {}
            for name, kind in sorted(kinds.items()):
                pool = available[kind]
                names[name] = pool[min(used.get(kind, 0), len(pool) - 1)]
                used[kind] = used.get(kind, 0) + 1
            return layer, names
    return None


def renamed(node: Any, names: dict[str, str]) -> Any:
    if isinstance(node, dict):
        if "property" in node and len(node) == 1:
            return {"property": names[node["property"]]}
        return {key: renamed(value, names) for key, value in node.items()}
    if isinstance(node, list):
        return [renamed(item, names) for item in node]
    return node


@pytest.fixture(scope="module")
def layer_features(client: httpx.Client) -> dict[str, list[dict[str, Any]]]:
    return {layer: served_features(client, layer) for layer in LAYERS}


# Examples whose properties are used as booleans: no layer of the registry has a boolean field to map them on.
NO_BOOLEAN_QUERYABLE = {"example14", "example15", "example16", "example17", "example18"}


def test_every_case_is_mapped_onto_a_layer_but_the_boolean_ones(registry: LayerRegistry) -> None:
    unmapped = {name for name, text, _, _ in CASES if mapping(registry, cql2.parse_text(text).to_json()) is None}
    assert unmapped == NO_BOOLEAN_QUERYABLE


def test_conformance_declares_exactly_the_translated_classes(client: httpx.Client) -> None:
    declared = {c for c in client.get("/conformance").json()["conformsTo"] if c.startswith(CLASS)}
    assert declared == set(CONFORMANCE)
    assert not declared & {CLASS + c for c in ("functions", "arithmetic", "array-functions")}


@pytest.mark.parametrize(("name", "text", "as_json", "classes"), CASES, ids=[c[0] for c in CASES])
def test_ogc_expression(client: httpx.Client, registry: LayerRegistry, layer_features: dict[str, list[dict[str, Any]]],
                        name: str, text: str, as_json: str | None, classes: set[str]) -> None:
    tree = cql2.parse_text(text).to_json()
    found = mapping(registry, tree)
    if found is None:
        assert name in NO_BOOLEAN_QUERYABLE
        return
    layer, names = found
    mapped = renamed(tree, names)
    encodings = {"cql2-text": cql2.parse_json(json.dumps(mapped)).to_text(),
                 "cql2-json": json.dumps(renamed(json.loads(as_json), names) if as_json else mapped)}
    for language, sent in encodings.items():
        got = selected_ids(client, layer, {"filter": sent, "filter-lang": language})
        if not classes <= DECLARED:
            assert isinstance(got, httpx.Response) and error(got, 400).parameter == "filter", (language, sent)
            continue
        assert isinstance(got, set), (language, sent, got.text[:300])
        want = {f["id"] for f in layer_features[layer] if reference_matches(mapped, f)}
        assert got == want, (language, sent)
