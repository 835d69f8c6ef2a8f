"""Layer styles: the QML and SLD files themselves, publishing them into public.layer_styles, and QGIS
picking them up as the default style of a PostGIS layer."""

import json
import os
import re
import shutil
import subprocess
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest

from gis.layers import LayerRegistry, LayerSpec
from gis.settings import Settings
from gis.styles import publish_styles

ROOT = Path(__file__).resolve().parent.parent
LAYER_IDS = sorted(p.stem for p in (ROOT / "layers").glob("*/*.yml"))
CATEGORIZED_IDS = sorted(
    p.stem
    for p in (ROOT / "styles").glob("*/*.qml")
    if ET.parse(p).getroot().find("renderer-v2[@type='categorizedSymbol']") is not None
)
QGIS_PYTHON = "/usr/bin/python3"
QGIS_SCRIPT = Path(__file__).resolve().parent / "qgis_scripts" / "open_postgis_layer.py"

SLD = "{http://www.opengis.net/sld}"
SE = "{http://www.opengis.net/se}"
OGC = "{http://www.opengis.net/ogc}"
SYMBOLIZERS = {f"{SE}{kind}Symbolizer" for kind in ("Point", "Line", "Polygon")}
QML_GEOMETRY_TYPE = {"Point": "0", "LineString": "1", "Polygon": "2"}

# Attributes of QML elements that hold a field name, and those that hold an expression ("field" quoted).
FIELD_NAME_ATTRIBUTES = {"field", "fieldName", "startField", "endField", "durationField"}
EXPRESSION_ATTRIBUTES = {"attr", "filter", "exp", "expression", "startExpression", "endExpression"}
EXPRESSION_ELEMENTS = {"previewExpression", "mapTip"}
QUOTED_IDENTIFIER = re.compile(r'"([^"]+)"')
PLAIN_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _qml(settings: Settings, spec: LayerSpec) -> ET.Element:
    return ET.parse(settings.styles_dir / spec.style).getroot()


def _sld(settings: Settings, spec: LayerSpec) -> ET.Element:
    return ET.parse((settings.styles_dir / spec.style).with_suffix(".sld")).getroot()


def _qml_field_references(root: ET.Element) -> set[str]:
    """Every field name the style uses: renderer, rules, labels, data-defined properties, form config."""
    refs: set[str] = set()
    for element in root.iter():
        expressions = [v for k, v in element.attrib.items() if k in EXPRESSION_ATTRIBUTES]
        if element.tag in EXPRESSION_ELEMENTS and element.text:
            expressions.append(element.text)
        if element.tag == "Option" and element.get("name") == "expression":  # data-defined property
            expressions.append(element.get("value", ""))
        if element.tag == "Option" and element.get("name") == "field" and element.get("value"):
            refs.add(element.attrib["value"])
        for key in FIELD_NAME_ATTRIBUTES & element.attrib.keys():
            if key == "fieldName" and element.get("isExpression") == "1":
                expressions.append(element.attrib[key])
            elif element.attrib[key]:
                refs.add(element.attrib[key])
        if element.tag == "field" and element.get("name"):
            refs.add(element.attrib["name"])
        for expression in expressions:
            refs.update(QUOTED_IDENTIFIER.findall(expression))
            if element.tag.startswith("renderer") and PLAIN_IDENTIFIER.fullmatch(expression):
                refs.add(expression)
    return refs


def _categories(root: ET.Element) -> dict[str, str]:
    """Categorized renderer: category value -> the colour of the first layer of its symbol, as 'r,g,b'."""
    renderer = root.find("renderer-v2")
    assert renderer is not None
    colors: dict[str, str] = {}
    for symbol in renderer.iterfind("symbols/symbol"):
        option = next(o for o in symbol.iterfind("layer/Option/Option") if o.get("name") in ("line_color", "color"))
        colors[symbol.attrib["name"]] = option.attrib["value"].rsplit(",", 1)[0]
    return {c.attrib["value"]: colors[c.attrib["symbol"]] for c in renderer.iterfind("categories/category")}


# -- (a) the files ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("layer_id", LAYER_IDS)
def test_qml_is_a_qgis_322_style_with_a_renderer(layer_id: str, registry: LayerRegistry, settings: Settings) -> None:
    root = _qml(settings, registry[layer_id])
    assert root.tag == "qgis"
    assert root.get("version", "").startswith("3.22")
    assert root.get("styleCategories") == "AllStyleCategories"
    renderer = root.find("renderer-v2")
    assert renderer is not None and renderer.get("type") not in (None, "nullSymbol")


@pytest.mark.parametrize("layer_id", LAYER_IDS)
def test_qml_uses_only_the_layers_fields(layer_id: str, registry: LayerRegistry, settings: Settings) -> None:
    spec = registry[layer_id]
    refs = _qml_field_references(_qml(settings, spec))
    assert refs, "the style should use at least one field"
    assert refs <= {*spec.field_names, "fid"}, f"unknown fields: {sorted(refs - {*spec.field_names, 'fid'})}"


@pytest.mark.parametrize("layer_id", LAYER_IDS)
def test_qml_draws_the_layers_geometry_type(layer_id: str, registry: LayerRegistry, settings: Settings) -> None:
    spec = registry[layer_id]
    geometry = spec.geometry.value.removeprefix("Multi")
    assert _qml(settings, spec).findtext("layerGeometryType") == QML_GEOMETRY_TYPE[geometry]


@pytest.mark.parametrize("layer_id", CATEGORIZED_IDS)
def test_categories_cover_every_declared_value(layer_id: str, registry: LayerRegistry, settings: Settings) -> None:
    spec = registry[layer_id]
    root = _qml(settings, spec)
    renderer = root.find("renderer-v2")
    assert renderer is not None
    field = spec.field(renderer.attrib["attr"])
    assert field is not None and field.values, "categorize on a coded field"
    assert set(field.values) <= set(_categories(root))


@pytest.mark.parametrize("layer_id", LAYER_IDS)
def test_sld_is_se_11_and_names_the_layer(layer_id: str, registry: LayerRegistry, settings: Settings) -> None:
    root = _sld(settings, registry[layer_id])
    assert root.tag == f"{SLD}StyledLayerDescriptor" and root.get("version") == "1.1.0"
    assert root.findtext(f"{SLD}NamedLayer/{SE}Name") == layer_id
    rules = list(root.iter(f"{SE}Rule"))
    assert any(child.tag in SYMBOLIZERS for rule in rules for child in rule)


@pytest.mark.parametrize("layer_id", LAYER_IDS)
def test_sld_uses_only_the_layers_fields(layer_id: str, registry: LayerRegistry, settings: Settings) -> None:
    spec = registry[layer_id]
    names = {p.text for p in _sld(settings, spec).iter(f"{OGC}PropertyName")}
    assert names <= {*spec.field_names, "fid"}


def test_pipelines_follow_the_cjj_61_colours(registry: LayerRegistry, settings: Settings) -> None:
    """CJJ 61-2017 appendix B: 给水 sky blue, 排水 brown, 燃气 pink, 热力 orange, 电力 red, 通信 green."""
    colors = _categories(_qml(settings, registry["pipelines"]))
    assert colors["water"] == "0,255,255"
    assert colors["sewer"] == "76,57,38"
    assert colors["gas"] == "255,0,255"
    assert colors["heat"] == "255,128,0"
    assert colors["power"] == "255,0,0"
    assert colors["telecom"] == "0,255,0"
    assert colors[""] == "102,0,204", "anything else is drawn as 不明管线 (unknown), purple"


def test_land_use_follows_the_planning_colours(registry: LayerRegistry, settings: Settings) -> None:
    colors = _categories(_qml(settings, registry["land_use_plan"]))
    assert colors["R"] == "255,255,0"  # residential yellow
    assert colors["B"] == "255,0,0"  # commercial red
    assert colors["G"] == "0,200,0"  # green space green
    assert colors["W"] == "159,127,255"  # logistics purple


# -- (b) publishing ---------------------------------------------------------------------------------------
def _styles(url: str) -> list[tuple]:
    with psycopg.connect(url) as conn:
        return conn.execute(
            "SELECT id, f_table_catalog = current_database(), f_table_schema, f_table_name, f_geometry_column,"
            " stylename, useasdefault, type, update_time, styleqml::text, stylesld::text"
            " FROM public.layer_styles ORDER BY id"
        ).fetchall()


def _publish(url: str, registry: LayerRegistry, styles_dir: Path) -> int:
    with psycopg.connect(url) as conn:
        return publish_styles(conn, registry, styles_dir)


@pytest.fixture
def published_db(clone_db: Callable[[], str], registry: LayerRegistry, settings: Settings) -> str:
    """A clone of the loaded database, styles published in it: a clone's rows still name the template as
    f_table_catalog, and QGIS finds a style only under the name of the database it opened."""
    url = clone_db()
    _publish(url, registry, settings.styles_dir)
    return url


def test_loaded_database_has_a_default_style_per_layer(loaded_db_url: str, registry: LayerRegistry) -> None:
    defaults = {(r[2], r[3]) for r in _styles(loaded_db_url) if r[6]}
    assert defaults == {(s.domain.value, s.id) for s in registry.values()}


def test_publish_writes_one_default_row_per_layer(published_db: str, registry: LayerRegistry) -> None:
    rows = _styles(published_db)
    defaults = [r for r in rows if r[6]]
    assert sorted((r[2], r[3]) for r in defaults) == sorted((s.domain.value, s.id) for s in registry.values())
    for _, catalog_ok, _, table, geom, stylename, _, type_, *_ in defaults:
        assert (catalog_ok, geom, stylename, type_) == (True, "geom", table, None)


def test_publish_repairs_the_catalog_of_a_cloned_database(
    clone_db: Callable[[], str], registry: LayerRegistry, settings: Settings
) -> None:
    url = clone_db()
    assert not any(r[1] for r in _styles(url)), "a clone's rows name the template database"
    assert _publish(url, registry, settings.styles_dir) == len(registry)
    rows = _styles(url)
    assert len(rows) == len(registry) and all(r[1] for r in rows), "repaired in place, not duplicated"


def test_publishing_again_changes_nothing(published_db: str, registry: LayerRegistry, settings: Settings) -> None:
    before = _styles(published_db)
    assert _publish(published_db, registry, settings.styles_dir) == 0
    assert _styles(published_db) == before


def test_publish_rewrites_only_a_changed_style(
    published_db: str, registry: LayerRegistry, settings: Settings, tmp_path: Path
) -> None:
    styles = shutil.copytree(settings.styles_dir, tmp_path / "styles")
    qml = styles / registry["pipelines"].style
    qml.write_text(qml.read_text(encoding="utf-8").replace("给水 Water supply", "给水 Potable water"), "utf-8")
    before = {r[3]: r for r in _styles(published_db)}

    assert _publish(published_db, registry, styles) == 1
    after = {r[3]: r for r in _styles(published_db)}
    assert "给水 Potable water" in after["pipelines"][9]
    assert after["pipelines"][0] == before["pipelines"][0], "updated in place, not a new row"
    assert {k: v for k, v in after.items() if k != "pipelines"} == {k: v for k, v in before.items() if k != "pipelines"}


def test_publish_takes_the_default_back_from_another_style(
    published_db: str, registry: LayerRegistry, settings: Settings
) -> None:
    with psycopg.connect(published_db) as conn:
        conn.execute(
            "INSERT INTO public.layer_styles (f_table_catalog, f_table_schema, f_table_name, f_geometry_column,"
            " stylename, styleqml, useasdefault) VALUES (current_database(), 'pipeline', 'pipelines', 'geom',"
            " 'saved from QGIS', XMLPARSE(DOCUMENT '<qgis/>'), true)"
        )
    assert _publish(published_db, registry, settings.styles_dir) == 1
    defaults = [r[5] for r in _styles(published_db) if r[3] == "pipelines" and r[6]]
    assert defaults == ["pipelines"]


# -- (c) QGIS reads them ----------------------------------------------------------------------------------
def _open_in_qgis(url: str, layers: list[str], tmp_path: Path) -> dict[str, dict]:
    """Run the QGIS-side script with Debian's Python (python3-qgis) and return its report per layer."""
    info = psycopg.conninfo.conninfo_to_dict(url)
    runtime = tmp_path / "xdg"
    runtime.mkdir(mode=0o700)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    env |= {"QT_QPA_PLATFORM": "offscreen", "XDG_RUNTIME_DIR": str(runtime)}
    env["PGPASSWORD"] = str(info.get("password", ""))
    command = [
        QGIS_PYTHON, str(QGIS_SCRIPT),
        "--host", str(info.get("host", "127.0.0.1")), "--port", str(info.get("port", "5432")),
        "--dbname", str(info["dbname"]), "--user", str(info.get("user", "postgres")),
        *layers,
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=180, check=False)
    assert result.stdout.strip(), f"no report from QGIS (is python3-qgis installed?): {result.stderr[-2000:]}"
    report = json.loads(result.stdout.strip().splitlines()[-1])
    return {layer["layer"]: layer for layer in report["layers"]}


PIPELINES, LAND_USE, UNSTYLED = "pipeline.pipelines", "planning.land_use_plan", "pipeline.unstyled"


@pytest.mark.qgis
def test_qgis_opens_postgis_layers_with_their_published_default_style(published_db: str, tmp_path: Path) -> None:
    with psycopg.connect(published_db) as conn:  # the control: a table nobody published a style for
        conn.execute("CREATE TABLE pipeline.unstyled (id serial PRIMARY KEY, geom geometry(LineString, 4490))")
        conn.execute("INSERT INTO pipeline.unstyled (geom) VALUES ('SRID=4490;LINESTRING(123.4 41.8, 123.5 41.8)')")

    layers = _open_in_qgis(published_db, [PIPELINES, LAND_USE, UNSTYLED], tmp_path)

    pipelines, land_use, unstyled = layers[PIPELINES], layers[LAND_USE], layers[UNSTYLED]
    assert pipelines["valid"] and pipelines["feature_count"] > 0
    assert (pipelines["renderer"], pipelines["attribute"]) == ("categorizedSymbol", "utility")
    assert {c["value"]: c["color"] for c in pipelines["categories"]}["water"] == "#00ffff"
    assert pipelines["aliases"]["utility"] == "管线类别"
    assert land_use["valid"] and land_use["feature_count"] > 0
    assert (land_use["renderer"], land_use["attribute"]) == ("categorizedSymbol", "land_use_code")
    assert {c["value"]: c["color"] for c in land_use["categories"]}["R"] == "#ffff00"
    assert land_use["labels_enabled"]
    for layer in (pipelines, land_use):  # the URI form with type=... finds the same row (type is NULL)
        assert layer["typed_uri"]["renderer"] == "categorizedSymbol"
        assert layer["typed_uri"]["attribute"] == layer["attribute"]
    assert unstyled["valid"] and unstyled["renderer"] == "singleSymbol", "unstyled: QGIS's random single symbol"
