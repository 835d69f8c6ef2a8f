"""The web map: the QML -> MapLibre style converter (checked against QGIS itself), /map/style.json per
caller, the page and its static files. The browser tests are in test_web_map_browser.py."""

import hashlib
import json
import os
import re
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import TEST_KEYS
from map_styles import drawn_by, drawn_collections

from gis.errors import ConfigError
from gis.layers import AccessClass, LayerRegistry, LayerSpec
from gis.map_style import draw_order, style_layers
from gis.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
VENDOR = ROOT / "services" / "static" / "vendor" / "maplibre-gl"
PX_PER_MM = 96 / 25.4
QGIS_PYTHON = "/usr/bin/python3"

# Run by Debian's Python with QGIS's bindings: each layer's QML loaded into a memory layer, and for each
# sample feature the symbols QGIS's own renderer picks, as colours and sizes. Independent of our reader.
QGIS_SYMBOLS = r'''
import json
import sys

from qgis.core import QgsApplication, QgsFeature, QgsField, QgsRenderContext, QgsVectorLayer
from qgis.PyQt.QtCore import Qt, QVariant

app = QgsApplication([], False)
app.initQgis()
TYPES = {"text": QVariant.String, "integer": QVariant.Int, "bigint": QVariant.LongLong, "real": QVariant.Double,
         "boolean": QVariant.Bool, "date": QVariant.String, "timestamp": QVariant.String}


def rgba(colour):
    return [colour.red(), colour.green(), colour.blue(), colour.alpha()]


def parts(symbol):
    found = []
    for i in range(symbol.symbolLayerCount()):
        layer = symbol.symbolLayer(i)
        kind = layer.layerType()
        if not layer.enabled():
            continue
        if kind == "SimpleFill":
            if layer.brushStyle() != Qt.NoBrush:
                found.append({"kind": "fill", "rgba": rgba(layer.color())})
            if layer.strokeStyle() != Qt.NoPen:
                found.append({"kind": "line", "rgba": rgba(layer.strokeColor()), "width_mm": layer.strokeWidth()})
        elif kind == "SimpleLine":
            if layer.penStyle() != Qt.NoPen:
                found.append({"kind": "line", "rgba": rgba(layer.color()), "width_mm": layer.width()})
        elif kind == "LinePatternFill":
            found.append({"kind": "fill", "rgba": rgba(layer.subSymbol().symbolLayer(0).color())})
        elif kind == "SimpleMarker":
            found.append({"kind": "marker", "rgba": rgba(layer.color()), "size_mm": layer.size(),
                          "shape": layer.encodeShape(layer.shape())})
        else:
            found.append({"kind": "other", "class": kind})
    return found


report = {}
for item in json.load(sys.stdin):
    layer = QgsVectorLayer(item["geometry"] + "?crs=EPSG:4490", item["id"], "memory")
    layer.dataProvider().addAttributes([QgsField(f["name"], TYPES[f["type"]]) for f in item["fields"]])
    layer.updateFields()
    message, ok = layer.loadNamedStyle(item["qml"])
    if not ok:
        raise SystemExit(item["qml"] + ": " + message)
    renderer = layer.renderer().clone()
    context = QgsRenderContext()
    renderer.startRender(context, layer.fields())
    drawn = []
    for sample in item["samples"]:
        feature = QgsFeature(layer.fields())
        for name, value in sample.items():
            feature[name] = value
        context.expressionContext().setFeature(feature)
        drawn.append([p for s in renderer.symbolsForFeature(feature, context) for p in parts(s)])
    renderer.stopRender(context)
    report[item["id"]] = drawn
print(json.dumps(report))
'''

# Observations are drawn by rules on pollutant and value: samples on both sides of every bound.
RULE_SAMPLES = {"observations": [{"pollutant": "AQI", "value": v} for v in (0, 50, 51, 100, 101, 150, 175, 200,
                                                                            250, 300, 301, 480)]
                + [{"pollutant": "PM2.5", "value": 75}, {"pollutant": "NO2", "value": None}, {}]}


# -- a small evaluator of the MapLibre expressions the converter writes (as MapLibre evaluates them) -------

def evaluate(expression: Any, properties: dict[str, Any]) -> Any:
    if not isinstance(expression, list):
        return expression
    op, args = expression[0], expression[1:]
    if op == "literal":
        return args[0]
    if op == "get":
        return properties.get(args[0])
    if op == "has":
        return properties.get(args[0]) is not None  # a NULL is left out of the tile's properties
    if op == "typeof":
        value = evaluate(args[0], properties)
        return {bool: "boolean", int: "number", float: "number", str: "string"}.get(type(value), "null")
    if op == "to-string":
        value = evaluate(args[0], properties)
        return "" if value is None else str(value)
    if op == "!":
        return not evaluate(args[0], properties)
    if op == "all":
        return all(evaluate(a, properties) for a in args)
    if op == "any":
        return any(evaluate(a, properties) for a in args)
    if op == "in":
        return evaluate(args[0], properties) in evaluate(args[1], properties)
    if op in ("==", "!=", "<", "<=", ">", ">="):
        left, right = evaluate(args[0], properties), evaluate(args[1], properties)
        if op in ("==", "!="):
            return (left == right) == (op == "==")
        return {"<": left < right, "<=": left <= right, ">": left > right, ">=": left >= right}[op]
    if op == "match":
        value = evaluate(args[0], properties)
        for labels, output in zip(args[1:-1:2], args[2:-1:2], strict=True):
            if value in (labels if isinstance(labels, list) else [labels]):
                return evaluate(output, properties)
        return evaluate(args[-1], properties)
    if op == "case":
        for condition, output in zip(args[0:-1:2], args[1:-1:2], strict=True):
            if evaluate(condition, properties):
                return evaluate(output, properties)
        return evaluate(args[-1], properties)
    raise AssertionError(f"the converter wrote an operator this test does not know: {op}")


def _rgba(text: str) -> list[int]:
    r, g, b, a = re.fullmatch(r"rgba\((\d+),(\d+),(\d+),([\d.]+)\)", text).groups()  # type: ignore[union-attr]
    return [int(r), int(g), int(b), round(float(a) * 255)]


def drawn_by_style(layers: tuple[dict[str, Any], ...], properties: dict[str, Any]) -> list[dict[str, Any]]:
    """What our style layers draw for a feature with these properties, bottom first, as QGIS's report has it."""
    found = []
    for layer in layers:
        if "filter" in layer and not evaluate(layer["filter"], properties):
            continue
        paint, layout = layer["paint"], layer.get("layout", {})
        if layer["type"] == "fill" and "fill-pattern" in paint:
            colour = evaluate(paint["fill-pattern"], properties).split(":")[4]
            found.append({"kind": "fill", "rgba": [int(v) for v in colour.split(",")]})
        elif layer["type"] == "fill":
            found.append({"kind": "fill", "rgba": _rgba(evaluate(paint["fill-color"], properties))})
        elif layer["type"] == "line":
            found.append({"kind": "line", "rgba": _rgba(evaluate(paint["line-color"], properties)),
                          "width_px": evaluate(paint["line-width"], properties)})
        else:
            _, shape, size, fill, _stroke, _width = evaluate(layout["icon-image"], properties).split(":")
            found.append({"kind": "marker", "rgba": [int(v) for v in fill.split(",")], "size_px": float(size),
                          "shape": shape})
    return found


def as_qgis_draws(parts: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """QGIS's report in our units (a hairline is one pixel), leaving out what the converter names as not done."""
    out = []
    for part in parts:
        if part["kind"] == "other":
            continue
        part = dict(part)
        if "width_mm" in part:
            part["width_px"] = max(round(part.pop("width_mm") * PX_PER_MM, 2), 1.0)
        if "size_mm" in part:
            part["size_px"] = round(part.pop("size_mm") * PX_PER_MM, 2)
        out.append(part)
    return out


def _key(part: dict[str, Any]) -> str:
    return json.dumps(part, sort_keys=True)


def samples(spec: LayerSpec, qml: str) -> list[dict[str, Any]]:
    """Features to draw: every category value, one no category has and NULL; the rule samples; or one plain."""
    if spec.id in RULE_SAMPLES:
        return RULE_SAMPLES[spec.id]
    match = re.search(r'<renderer-v2[^>]*type="categorizedSymbol"[^>]*attr="([^"]+)"', qml)
    if match is None:
        return [{}]
    values = re.findall(r'<category [^>]*value="([^"]*)"', qml)
    return [{match.group(1): v} for v in values if v] + [{match.group(1): "no-such-category"}, {}]


@pytest.fixture(scope="module")
def qgis_draws(registry: LayerRegistry, settings: Settings, tmp_path_factory: pytest.TempPathFactory
               ) -> dict[str, list[list[dict[str, Any]]]]:
    request = [{"id": spec.id, "geometry": spec.geometry.value.removeprefix("Multi"),
                "qml": str(settings.styles_dir / spec.style),
                "fields": [{"name": f.name, "type": f.type.value} for f in spec.fields],
                "samples": samples(spec, (settings.styles_dir / spec.style).read_text(encoding="utf-8"))}
               for spec in registry.values()]
    runtime = tmp_path_factory.mktemp("xdg")
    runtime.chmod(0o700)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    env |= {"QT_QPA_PLATFORM": "offscreen", "XDG_RUNTIME_DIR": str(runtime)}
    result = subprocess.run([QGIS_PYTHON, "-c", QGIS_SYMBOLS], input=json.dumps(request), capture_output=True,
                            text=True, env=env, timeout=180, check=False)
    assert result.stdout.strip(), f"no report from QGIS (is python3-qgis installed?): {result.stderr[-2000:]}"
    return json.loads(result.stdout.strip().splitlines()[-1])


# -- the converter -------------------------------------------------------------------------------------

@pytest.mark.qgis
def test_every_layer_draws_what_qgis_draws_for_each_category_and_rule(
        registry: LayerRegistry, settings: Settings, qgis_draws: dict[str, list[list[dict[str, Any]]]]) -> None:
    compared = 0
    for spec in registry.values():
        qml = (settings.styles_dir / spec.style).read_text(encoding="utf-8")
        style = style_layers(spec, qml)
        for properties, by_qgis in zip(samples(spec, qml), qgis_draws[spec.id], strict=True):
            ours = sorted(map(_key, drawn_by_style(style.layers, properties)))
            assert ours == sorted(map(_key, as_qgis_draws(by_qgis))), f"{spec.id} for {properties}"
            compared += 1
    assert compared > 80  # every category of every layer, not just a few


def test_categories_become_one_match_on_the_category_field(registry: LayerRegistry, settings: Settings) -> None:
    spec = registry["pipelines"]
    style = style_layers(spec, (settings.styles_dir / spec.style).read_text(encoding="utf-8"))
    (layer,) = style.layers
    colour = layer["paint"]["line-color"]
    assert colour[:2] == ["match", ["to-string", ["get", "utility"]]]
    assert "filter" not in layer  # the empty category ("all other values") draws the rest
    assert [e["label"] for e in style.legend][:2] == ["给水 Water supply (JS)", "污水 Sewer (WS)"]


def test_a_style_layer_class_the_map_cannot_draw_is_named_not_hidden(registry: LayerRegistry,
                                                                     settings: Settings) -> None:
    spec = registry["basic_farmland"]
    style = style_layers(spec, (settings.styles_dir / spec.style).read_text(encoding="utf-8"))
    assert style.not_converted == ("PointPatternFill",)


@pytest.mark.parametrize(("expression", "problem"), [
    ('"pollutant" LIKE \'A%\'', "expected a comparison"),
    ('"no_such_field" = 1', "no field 'no_such_field'"),
    ('upper("pollutant") = \'AQI\'', "expected a \"field\""),
])
def test_a_rule_filter_outside_the_converted_subset_names_the_file(registry: LayerRegistry, settings: Settings,
                                                                   expression: str, problem: str) -> None:
    spec = registry["observations"]
    qml = (settings.styles_dir / spec.style).read_text(encoding="utf-8")
    broken = qml.replace('filter="&quot;pollutant&quot; &lt;> \'AQI\'"',
                         f'filter="{expression.replace(chr(34), "&quot;")}"')
    assert broken != qml
    with pytest.raises(ConfigError, match=re.escape(problem)) as raised:
        style_layers(spec, broken, "styles/environment/observations.qml")
    assert "styles/environment/observations.qml" in str(raised.value)


def test_in_is_null_and_not_filters_follow_qgis_null_semantics(registry: LayerRegistry, settings: Settings) -> None:
    spec = registry["observations"]
    qml = (settings.styles_dir / spec.style).read_text(encoding="utf-8")
    for expression, expected in [
        ("\"pollutant\" IN ('PM2.5', 'NO2')", {"PM2.5": True, "AQI": False, None: False}),
        ("\"pollutant\" NOT IN ('PM2.5', 'NO2')", {"PM2.5": False, "AQI": True, None: False}),
        ('"pollutant" IS NULL', {"PM2.5": False, None: True}),
        ("NOT (\"pollutant\" = 'AQI' OR \"pollutant\" IS NULL)", {"AQI": False, "NO2": True, None: False}),
    ]:
        changed = qml.replace('filter="&quot;pollutant&quot; &lt;> \'AQI\'"',
                              'filter="{}"'.format(expression.replace('"', "&quot;").replace("'", "&apos;")))
        last = style_layers(spec, changed).layers[0]["layout"]["icon-image"]  # a case; the last rule is ours
        for value, drawn in expected.items():
            properties = {} if value is None else {"pollutant": value}
            assert evaluate(last[-3], properties) is drawn, f"{expression} for {value}"


def test_polygons_lie_under_lines_under_points_and_opaque_fills_under_translucent(
        registry: LayerRegistry, settings: Settings) -> None:
    styles = [style_layers(s, (settings.styles_dir / s.style).read_text(encoding="utf-8")) for s in registry.values()]
    order = [s.layer_id for s in draw_order(styles)]
    geometry = {s.layer_id: s.geometry for s in styles}
    ranks = [{"Polygon": 0, "LineString": 1, "Point": 2}[geometry[i]] for i in order]
    assert ranks == sorted(ranks)
    assert order.index("land_use_plan") < order.index("buildings") < order.index("admin_districts")
    assert order.index("water_bodies") < order.index("ecological_redline")
    assert order.index("roads") < order.index("pipelines")


# -- the service ---------------------------------------------------------------------------------------

def _style(api_url: str, key: str | None) -> dict[str, Any]:
    headers = {"X-API-Key": key} if key else {}
    response = httpx.get(f"{api_url}/map/style.json", headers=headers, timeout=30)
    assert response.status_code == 200, response.text
    assert response.headers["cache-control"].startswith("private")
    return response.json()


def _tiled_collections(api_url: str, key: str | None) -> set[str]:
    """The layers /collections shows this caller, less those whose tiles it is refused (row rules)."""
    headers = {"X-API-Key": key} if key else {}
    kinds = {c["id"]: c["itemType"] for c in httpx.get(f"{api_url}/collections", headers=headers,
                                                       timeout=30).json()["collections"]}
    probe = {"feature": "tiles/WebMercatorQuad/0/0/0", "coverage": "map/tiles/WebMercatorQuad/0/0/0"}
    return {i for i, kind in kinds.items() if httpx.get(f"{api_url}/collections/{i}/{probe[kind]}", headers=headers,
                                                        timeout=30).status_code in (200, 204)}


def test_anonymous_style_has_only_the_public_layers(api_url: str, registry: LayerRegistry) -> None:
    style = _style(api_url, None)
    public = {s.id for s in [*registry.values(), *registry.rasters.values()] if s.access is AccessClass.public}
    assert set(drawn_collections(style)) == public
    assert [m["id"] for m in style["metadata"]["gis:layers"]] == [
        drawn_by(layer) for layer in style["layers"] if "source" in layer and layer["id"].endswith(":0")]


@pytest.mark.parametrize("role", ["planner", "pipeline_app", "admin"])
def test_a_key_sees_the_layers_its_role_may_read_as_tiles(api_url: str, role: str) -> None:
    style = _style(api_url, TEST_KEYS[role])
    assert set(drawn_collections(style)) == _tiled_collections(api_url, TEST_KEYS[role])
    for source in style["sources"].values():
        assert "api_key" not in source["tiles"][0] and TEST_KEYS[role] not in source["tiles"][0]


def test_the_map_opens_where_most_layers_are(api_url: str, admin_headers: dict[str, str]) -> None:
    style = _style(api_url, TEST_KEYS["admin"])
    bounds = style["metadata"]["gis:bounds"]
    extents = [c["extent"]["spatial"]["bbox"][0] for c in httpx.get(
        f"{api_url}/collections", headers=admin_headers, timeout=30).json()["collections"]
        if c["id"] in drawn_collections(style) and "spatial" in c["extent"]]
    inside = [e for e in extents if e[0] >= bounds[0] - 0.05 and e[2] <= bounds[2] + 0.05
              and e[1] >= bounds[1] - 0.05 and e[3] <= bounds[3] + 0.05]
    assert len(inside) > len(extents) / 2
    assert bounds[2] - bounds[0] < 0.5  # the city, not the whole municipality with its counties


def test_event_layers_start_hidden(api_url: str, registry: LayerRegistry) -> None:
    style = _style(api_url, TEST_KEYS["admin"])
    for info in style["metadata"]["gis:layers"]:
        # raster layers (basemaps under the data) start hidden too
        hidden = info["id"] in registry.rasters or registry[info["id"]].temporal.kind == "event"
        assert info["visible"] is not hidden
        for layer in style["layers"]:
            if layer["id"] in info["styleLayers"]:
                assert (layer.get("layout", {}).get("visibility") == "none") is hidden


def test_the_page_loads_only_our_own_scripts(api_url: str) -> None:
    response = httpx.get(f"{api_url}/map", params={"api_key": TEST_KEYS["planner"]}, timeout=30)
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/html")
    page = response.text
    scripts = re.findall(r"<script([^>]*)>(.*?)</script>", page, re.DOTALL)
    assert scripts and all(body.strip() == "" and 'src="/static/' in attributes for attributes, body in scripts)
    assert "://" not in "".join(re.findall(r'(?:src|href)="([^"]*)"', page))  # nothing from another host
    assert "script-src 'self'" in response.headers["content-security-policy"]
    for path in re.findall(r'(?:src|href)="(/static/[^"]+)"', page):
        asset = httpx.get(f"{api_url}{path}", timeout=30)
        assert asset.status_code == 200, path
    assert f"api_key={TEST_KEYS['planner']}" in page  # the way home keeps the caller's key


def test_the_landing_page_links_the_map(api_url: str) -> None:
    landing = httpx.get(f"{api_url}/", params={"f": "json"}, timeout=30).json()
    assert any(link["href"].endswith("/map") and link["type"] == "text/html" for link in landing["links"])


def test_an_unknown_parameter_is_a_400_naming_it(api_url: str) -> None:
    for path in ("/map", "/map/style.json"):
        response = httpx.get(f"{api_url}{path}", params={"zoom": "3"}, timeout=30)
        assert response.status_code == 400
        assert response.json()["parameter"] == "zoom"


def test_vendored_maplibre_is_the_tarballs_files() -> None:
    provenance = (VENDOR / "PROVENANCE").read_text(encoding="utf-8")
    listed = dict((name, digest) for digest, name in re.findall(r"^([0-9a-f]{64})\s+(\S+)", provenance, re.M))
    assert set(listed) == {"maplibre-gl.js", "maplibre-gl.css", "LICENSE.txt"}
    for name, digest in listed.items():
        assert hashlib.sha256((VENDOR / name).read_bytes()).hexdigest() == digest, name
    assert re.search(r"^integrity:\s+sha512-", provenance, re.M)
