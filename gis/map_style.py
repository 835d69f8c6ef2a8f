"""MapLibre GL style layers from our QGIS styles (styles/<domain>/<layer>.qml), for the web map.

Pure functions: the QML text and the layer's spec in, style layers (plain dicts) out. What is converted:
single-symbol, categorised (one `match` on the category field) and rule-based renderers (one `case`
over the rules' filters, for filters of comparisons, IN, IS NULL, AND, OR, NOT); symbol layers
SimpleFill (solid or Qt hatch brush), SimpleLine (colour, width, pen style or custom dash, cap, join,
offset), LinePatternFill (a hatch at the nearest multiple of 45°) and SimpleMarker (any shape, as an
icon). Sizes in millimetres, points or pixels become pixels at 96 dpi, as QGIS draws on a screen.

Images are named, not shipped: `qgis-marker:<shape>:<size>:<fill>:<stroke>:<stroke width>` and
`qgis-hatch:<angles>:<tile>:<line width>:<colour>` (sizes in CSS pixels, colours as r,g,b,a 0-255);
the page draws each one the first time the map asks for it (services/static/map/web-map.js).

A symbol layer of another class (PointPatternFill, say) is left out and named in the layer's
`metadata["gis:notConverted"]`; a renderer or filter that cannot be converted is a ConfigError naming
the file, so a style the map cannot show faithfully never reaches it silently.
"""

import math
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from typing import Any

from gis.errors import ConfigError
from gis.layers import LayerSpec

Expr = Any  # a MapLibre expression: a JSON value or a list whose head names the operator

PX_PER_UNIT = {"MM": 96 / 25.4, "Point": 96 / 72, "Pixel": 1.0}
# Qt pen styles as dashes in line widths (the unit MapLibre's line-dasharray uses, as Qt does)
PEN_DASHES: dict[str, tuple[float, ...] | None] = {
    "solid": None, "dash": (4, 2), "dot": (1, 2), "dash dot": (4, 2, 1, 2), "dash dot dot": (4, 2, 1, 2, 1, 2),
}
# Qt brush styles: the angles of their hatch lines ("/" is 45°, counter-clockwise from east)
BRUSH_HATCHES = {"horizontal": (0,), "vertical": (90,), "b_diagonal": (45,), "f_diagonal": (135,),
                 "cross": (0, 90), "diagonal_x": (45, 135)}
BRUSH_SPACING_PX = 8  # Qt draws its hatch brushes on an 8-pixel grid
CAPS = {"square": "square", "round": "round", "flat": "butt"}
JOINS = {"bevel": "bevel", "miter": "miter", "round": "round"}
GEOMETRY_ORDER = {"Polygon": 0, "LineString": 1, "Point": 2}  # polygons under lines under points


@dataclass(frozen=True)
class Fill:
    colour: tuple[int, int, int, int]
    hatch: str | None  # a qgis-hatch image name, or None for a solid fill


@dataclass(frozen=True)
class Line:
    colour: tuple[int, int, int, int]
    width: float
    dashes: tuple[float, ...] | None
    cap: str
    join: str
    offset: float


@dataclass(frozen=True)
class Marker:
    image: str


Part = Fill | Line | Marker


@dataclass(frozen=True)
class Rule:
    """One way a feature is drawn: when (a MapLibre filter; None: always), how (parts, bottom first)."""

    condition: Expr | None
    category: str | None  # the categorised renderer's value ('' is QGIS's "all other values")
    label: str
    parts: tuple[Part, ...]
    opacity: float


@dataclass(frozen=True)
class Renderer:
    attribute: str | None  # the category field of a categorised renderer
    categories: tuple[str, ...]  # every category value, drawn or not
    rules: tuple[Rule, ...]
    not_converted: tuple[str, ...]


# -- reading the QML ---------------------------------------------------------------------------------

def _options(layer: ET.Element) -> dict[str, str]:
    """A symbol layer's properties: QGIS 3 writes them twice, as <Option> (newer) and <prop> (older)."""
    found = {p.get("k", ""): p.get("v", "") for p in layer.findall("prop")}
    mapping = layer.find("Option")
    if mapping is not None:
        found.update({o.get("name", ""): o.get("value", "") for o in mapping.findall("Option") if o.get("name")})
    return found


def _colour(text: str, where: str) -> tuple[int, int, int, int]:
    parts = text.split(",")  # QGIS 3.28+ appends ",rgb:..." after r,g,b,a
    try:
        r, g, b, a = (int(p) for p in parts[:4])
    except ValueError:
        raise ConfigError(f"{where}: '{text}' is not a colour r,g,b,a") from None
    return r, g, b, a


def _px(options: dict[str, str], key: str, unit_key: str, where: str, default: str = "0") -> float:
    unit = options.get(unit_key, "MM")
    if unit not in PX_PER_UNIT:
        raise ConfigError(f"{where}: {unit_key} '{unit}' is not converted (MM, Point or Pixel)")
    try:
        return round(float(options.get(key) or default) * PX_PER_UNIT[unit], 2)
    except ValueError:
        raise ConfigError(f"{where}: {key} '{options.get(key)}' is not a number") from None


def _hatch_name(angles: tuple[int, ...], spacing: float, width: float, colour: tuple[int, int, int, int]) -> str:
    # A diagonal hatch repeats after spacing·√2 along each axis; the tile is one repeat.
    tile = max(2, round(spacing * (math.sqrt(2) if any(a % 90 for a in angles) else 1)))
    return f"qgis-hatch:{','.join(map(str, angles))}:{tile}:{max(width, 1):g}:{','.join(map(str, colour))}"


def _line(o: dict[str, str], where: str, colour_key: str, width_key: str, style_key: str,
          unit_key: str, offset: bool) -> Line | None:
    """A pen: a SimpleLine's own (with its offset) or a SimpleFill's outline (its offset moves the fill)."""
    style = o.get(style_key, "solid")
    if style == "no":
        return None
    width = max(_px(o, width_key, unit_key, where), 1.0)  # QGIS draws a hairline for width 0
    if o.get("use_custom_dash") == "1":
        dash_px = [float(v) * PX_PER_UNIT.get(o.get("customdash_unit", "MM"), 1.0)
                   for v in o.get("customdash", "").split(";") if v]
        dashes: tuple[float, ...] | None = tuple(round(d / width, 2) for d in dash_px) or None
    elif style in PEN_DASHES:
        dashes = PEN_DASHES[style]
    else:
        raise ConfigError(f"{where}: {style_key} '{style}' is not converted ({', '.join(PEN_DASHES)})")
    return Line(_colour(o.get(colour_key, "0,0,0,255"), where), width, dashes,
                CAPS.get(o.get("capstyle", "square"), "butt"), JOINS.get(o.get("joinstyle", "bevel"), "bevel"),
                _px(o, "offset", "offset_unit", where) if offset else 0.0)


def _symbol_parts(symbol: ET.Element, where: str, skipped: list[str]) -> tuple[Part, ...]:
    parts: list[Part] = []
    for layer in symbol.findall("layer"):
        if layer.get("enabled", "1") == "0":
            continue
        kind, o = layer.get("class", ""), _options(layer)
        here = f"{where}: symbol '{symbol.get('name')}' {kind}"
        if kind == "SimpleFill":
            brush = o.get("style", "solid")
            colour = _colour(o.get("color", "0,0,0,255"), here)
            if brush == "solid":
                parts.append(Fill(colour, None))
            elif brush in BRUSH_HATCHES:
                parts.append(Fill(colour, _hatch_name(BRUSH_HATCHES[brush], BRUSH_SPACING_PX, 1, colour)))
            elif brush != "no":
                raise ConfigError(f"{here}: brush style '{brush}' is not converted")
            outline = _line(o, here, "outline_color", "outline_width", "outline_style", "outline_width_unit",
                            offset=False)
            if outline is not None:
                parts.append(outline)
        elif kind == "SimpleLine":
            line = _line(o, here, "line_color", "line_width", "line_style", "line_width_unit", offset=True)
            if line is not None:
                parts.append(line)
        elif kind == "LinePatternFill":
            sub = layer.find("symbol/layer")
            so = _options(sub) if sub is not None else {}
            angle = int(round(float(o.get("angle") or 0) / 45) * 45) % 180
            spacing = _px(o, "distance", "distance_unit", here, "3")
            width = _px(so, "line_width", "line_width_unit", here, "0.26")
            colour = _colour(so.get("line_color", o.get("color", "0,0,0,255")), here)
            parts.append(Fill(colour, _hatch_name((angle,), spacing, width, colour)))
        elif kind == "SimpleMarker":
            fill = _colour(o.get("color", "0,0,0,255"), here)
            stroke = _colour(o.get("outline_color", "0,0,0,255"), here)
            stroke_width = 0.0 if o.get("outline_style") == "no" else _px(o, "outline_width", "outline_width_unit",
                                                                           here)
            size = _px(o, "size", "size_unit", here, "2")
            parts.append(Marker(f"qgis-marker:{o.get('name', 'circle')}:{size:g}:{','.join(map(str, fill))}:"
                                f"{','.join(map(str, stroke))}:{stroke_width:g}"))
        else:
            skipped.append(kind)
    return tuple(parts)


def _symbols(renderer: ET.Element, where: str, skipped: list[str]) -> dict[str, tuple[tuple[Part, ...], float]]:
    symbols = renderer.find("symbols")
    found = {}
    for symbol in symbols.findall("symbol") if symbols is not None else ():
        found[symbol.get("name", "")] = (_symbol_parts(symbol, where, skipped), float(symbol.get("alpha") or 1))
    return found


def read_renderer(spec: LayerSpec, qml: str, where: str) -> Renderer:
    """The QML's renderer as rules with their parts; `where` names the file in errors."""
    try:
        root = ET.fromstring(qml)
    except ET.ParseError as exc:
        raise ConfigError(f"{where}: not a QML document: {exc}") from None
    renderer = root.find("renderer-v2")
    if renderer is None:
        raise ConfigError(f"{where}: no <renderer-v2>")
    opacity = float(root.findtext("layerOpacity") or 1)
    skipped: list[str] = []
    symbols = _symbols(renderer, where, skipped)
    kind = renderer.get("type")
    fields = {"fid", *spec.field_names}

    def rule(symbol: str, condition: Expr | None, category: str | None, label: str) -> Rule:
        if symbol not in symbols:
            raise ConfigError(f"{where}: rule '{label}' names no symbol '{symbol}'")
        parts, alpha = symbols[symbol]
        return Rule(condition, category, label, parts, round(alpha * opacity, 3))

    if kind == "singleSymbol":
        return Renderer(None, (), (rule("0", None, None, spec.title.zh),), tuple(skipped))
    if kind == "categorizedSymbol":
        attribute = renderer.get("attr", "")
        if attribute not in fields:
            raise ConfigError(f"{where}: categorised by '{attribute}', which layer '{spec.id}' does not have")
        categories = renderer.findall("categories/category")
        values = tuple(c.get("value", "") for c in categories)
        rules = tuple(rule(c.get("symbol", ""), None, c.get("value", ""), c.get("label") or c.get("value") or "")
                      for c in categories if c.get("render", "true") == "true")
        return Renderer(attribute, values, rules, tuple(skipped))
    if kind == "RuleRenderer":
        listed: list[Rule] = []
        for element in renderer.findall("rules/rule"):
            if element.find("rule") is not None:
                raise ConfigError(f"{where}: nested rules are not converted")
            if element.get("checkstate", "1") == "0" or element.get("symbol") is None:
                continue
            text = element.get("filter", "")
            if element.get("filter") == "ELSE":
                raise ConfigError(f"{where}: ELSE rules are not converted")
            condition = FilterParser(text, fields, where).parse() if text.strip() else None
            listed.append(rule(element.get("symbol", ""), condition, None, element.get("label") or text))
        return Renderer(None, (), tuple(listed), tuple(skipped))
    raise ConfigError(f"{where}: renderer '{kind}' is not converted (singleSymbol, categorizedSymbol, RuleRenderer)")


# -- QGIS filter expressions (the subset rule renderers use) -> MapLibre expressions ------------------

_TOKEN = re.compile(r"""\s*(?:(?P<field>"(?:[^"]|"")*")|(?P<string>'(?:[^']|'')*')|(?P<number>-?\d+(?:\.\d+)?)"""
                    r"""|(?P<op><>|!=|<=|>=|=|<|>|\(|\)|,)|(?P<word>[A-Za-z_]+))""")
_COMPARE = {"=": "==", "<>": "!=", "!=": "!=", "<": "<", "<=": "<=", ">": ">", ">=": ">="}


class FilterParser:
    """Recursive descent over: or := and (OR and)*; and := not (AND not)*; not := NOT not | comparison."""

    def __init__(self, text: str, fields: set[str], where: str) -> None:
        self.text, self.fields, self.where = text, fields, where
        self.tokens: list[tuple[str, str]] = []
        position = 0
        while position < len(text):
            match = _TOKEN.match(text, position)
            if match is None or match.end() == position:
                if not text[position:].strip():
                    break
                self._fail(f"cannot read '{text[position:position + 20]}'")
            assert match is not None
            kind = match.lastgroup or ""
            value = match.group(kind)
            self.tokens.append((kind, value.upper() if kind == "word" else value))
            position = match.end()
        self.at = 0

    def _fail(self, problem: str) -> None:
        raise ConfigError(f"{self.where}: rule filter {self.text!r}: {problem} (not converted)")

    def _peek(self) -> tuple[str, str]:
        return self.tokens[self.at] if self.at < len(self.tokens) else ("end", "")

    def _take(self, value: str | None = None) -> tuple[str, str]:
        token = self._peek()
        if value is not None and token[1] != value:
            self._fail(f"expected {value}, found {token[1] or 'the end'}")
        self.at += 1
        return token

    def parse(self) -> Expr:
        expression = self._or()
        if self._peek()[0] != "end":
            self._fail(f"unexpected {self._peek()[1]}")
        return expression

    def _or(self) -> Expr:
        terms = [self._and()]
        while self._peek() == ("word", "OR"):
            self._take()
            terms.append(self._and())
        return terms[0] if len(terms) == 1 else ["any", *terms]

    def _and(self) -> Expr:
        terms = [self._not()]
        while self._peek() == ("word", "AND"):
            self._take()
            terms.append(self._not())
        return terms[0] if len(terms) == 1 else ["all", *terms]

    def _not(self) -> Expr:
        if self._peek() == ("word", "NOT"):
            self._take()
            return ["!", self._not()]
        if self._peek() == ("op", "("):
            self._take()
            inner = self._or()
            self._take(")")
            return inner
        return self._comparison()

    def _field(self) -> str:
        kind, value = self._take()
        if kind != "field":
            self._fail(f"expected a \"field\", found {value or 'the end'}")
        name = value[1:-1].replace('""', '"')
        if name not in self.fields:
            self._fail(f"no field '{name}' in the layer")
        return name

    def _literal(self) -> str | float:
        kind, value = self._take()
        if kind == "string":
            return value[1:-1].replace("''", "'")
        if kind == "number":
            return float(value) if "." in value else int(value)
        self._fail(f"expected a literal, found {value or 'the end'}")
        return ""

    def _comparison(self) -> Expr:
        name = self._field()
        get = ["get", name]
        kind, value = self._peek()
        if kind == "word" and value in ("IS", "NOT", "IN"):
            self._take()
            negate = value == "NOT" or (value == "IS" and self._peek() == ("word", "NOT"))
            if value == "IS":
                if negate:
                    self._take("NOT")
                self._take("NULL")
                return ["has", name] if negate else ["!", ["has", name]]
            if value == "NOT":
                self._take("IN")
            self._take("(")
            values = [self._literal()]
            while self._peek() == ("op", ","):
                self._take()
                values.append(self._literal())
            self._take(")")
            inside: Expr = ["in", get, ["literal", values]]
            # NULL is neither in nor not in a list, as in QGIS
            return ["all", ["has", name], ["!", inside]] if negate else inside
        if kind != "op" or value not in _COMPARE:
            self._fail(f"expected a comparison after \"{name}\"")
        self._take()
        literal = self._literal()
        operator = _COMPARE[value]
        if isinstance(literal, str):
            compared: Expr = [operator, get, literal]
        else:
            compared = ["all", ["==", ["typeof", get], "number"], [operator, get, literal]]
        # Any comparison with NULL is NULL (false) in QGIS; a missing tile property is NULL
        return ["all", ["has", name], compared] if operator == "!=" else compared


# -- rules -> MapLibre layers ------------------------------------------------------------------------

def rgba(colour: tuple[int, int, int, int]) -> str:
    r, g, b, a = colour
    return f"rgba({r},{g},{b},{round(a / 255, 3):g})"


def _static_key(part: Part) -> tuple[Any, ...]:
    """What MapLibre cannot vary per feature, so parts differing in it need layers of their own."""
    if isinstance(part, Fill):
        return ("fill", part.hatch is not None)
    if isinstance(part, Line):
        return ("line", part.dashes, part.cap)
    return ("marker",)


def _paint_values(part: Part, opacity: float) -> dict[str, Any]:
    if isinstance(part, Fill):
        if part.hatch is not None:
            return {"fill-pattern": part.hatch, "fill-opacity": opacity}
        return {"fill-color": rgba(part.colour), "fill-opacity": opacity}
    if isinstance(part, Line):
        return {"line-color": rgba(part.colour), "line-width": part.width, "line-opacity": opacity,
                "line-offset": part.offset}
    return {"icon-image": part.image, "icon-opacity": opacity}


def _category_key(renderer: Renderer) -> Expr:
    return ["to-string", ["get", renderer.attribute]]


def _choose(renderer: Renderer, rules: list[Rule], values: list[Any]) -> Expr:
    """One value per rule -> a constant, a `match` on the category field, or a `case` over the filters."""
    if all(v == values[0] for v in values):
        return values[0]
    if renderer.attribute is not None:
        fallback = next((v for r, v in zip(rules, values, strict=True) if r.category == ""), values[0])
        by_value: dict[Any, list[str]] = {}
        for r, v in zip(rules, values, strict=True):
            if r.category:
                by_value.setdefault(v, []).append(r.category)
        arms = [x for v, labels in by_value.items() for x in (labels if len(labels) > 1 else labels[0], v)]
        return ["match", _category_key(renderer), *arms, fallback]
    arms = [x for r, v in zip(rules, values, strict=True) for x in (r.condition if r.condition is not None else True,
                                                                     v)]
    return ["case", *arms, values[-1]]


def _group_filter(renderer: Renderer, rules: list[Rule]) -> Expr | None:
    """The features this group of rules draws (None: all of them)."""
    if renderer.attribute is not None:
        drawn = sorted({r.category for r in rules if r.category})
        if any(r.category == "" for r in rules):  # "all other values": every value not of another category
            others = sorted(set(renderer.categories) - set(drawn) - {""})
            return ["!", ["match", _category_key(renderer), others, True, False]] if others else None
        return ["match", _category_key(renderer), drawn, True, False] if drawn else False
    if any(r.condition is None for r in rules):
        return None
    conditions = [r.condition for r in rules]
    return conditions[0] if len(conditions) == 1 else ["any", *conditions]


def _maplibre_layer(spec: LayerSpec, index: int, renderer: Renderer, key: tuple[Any, ...],
                    members: list[tuple[Rule, Part]]) -> dict[str, Any]:
    rules = [r for r, _ in members]
    per_rule = [_paint_values(p, r.opacity) for r, p in members]
    values = {name: _choose(renderer, rules, [v[name] for v in per_rule]) for name in per_rule[0]}
    first = members[0][1]
    layer: dict[str, Any] = {"id": f"{spec.id}:{index}", "source": spec.id, "source-layer": spec.id,
                             "metadata": {"gis:layer": spec.id}}
    if key[0] == "fill":
        layer.update(type="fill", paint=values)
    elif key[0] == "line":
        assert isinstance(first, Line)
        paint = {**values, **({"line-dasharray": list(first.dashes)} if first.dashes else {})}
        if paint.get("line-offset") == 0:
            del paint["line-offset"]
        layer.update(type="line", paint=paint, layout={"line-cap": first.cap, "line-join": first.join})
    else:
        layer.update(type="symbol", paint={"icon-opacity": values["icon-opacity"]},
                     layout={"icon-image": values["icon-image"], "icon-allow-overlap": True,
                             "icon-ignore-placement": True})
    group_filter = _group_filter(renderer, rules)
    if group_filter is not None:
        layer["filter"] = group_filter
    return layer


def _swatch(parts: tuple[Part, ...]) -> Part | None:
    """What a legend shows of a symbol: its solid fill, else its topmost pen (a road's centre, not its
    casing), else a hatch's colour or the marker."""
    fills = [p for p in parts if isinstance(p, Fill)]
    lines = [p for p in parts if isinstance(p, Line)]
    solid = [f for f in fills if f.hatch is None]
    return next(iter([*solid[:1], *lines[-1:], *fills[:1], *parts[:1]]), None)


def _legend(renderer: Renderer) -> list[dict[str, Any]]:
    entries = []
    for r in renderer.rules:
        swatch = _swatch(r.parts)
        if isinstance(swatch, Marker):
            entries.append({"label": r.label, "image": swatch.image})
        elif swatch is not None:
            entries.append({"label": r.label, "color": rgba(swatch.colour)})
    return entries


@dataclass(frozen=True)
class LayerStyle:
    layer_id: str
    geometry: str  # Point, LineString or Polygon (multi or not)
    layers: tuple[dict[str, Any], ...]
    legend: tuple[dict[str, Any], ...]
    not_converted: tuple[str, ...]
    fill_alpha: float  # the most opaque solid fill, 0..1 (0 when none): for the order of polygon layers


def style_layers(spec: LayerSpec, qml: str, where: str | None = None) -> LayerStyle:
    """The layer's QML as MapLibre style layers reading source `spec.id`, source-layer `spec.id`."""
    renderer = read_renderer(spec, qml, where or spec.style)
    groups: dict[tuple[Any, ...], list[tuple[Rule, Part]]] = {}
    for rule in renderer.rules:
        for slot, part in enumerate(rule.parts):
            groups.setdefault((slot, *_static_key(part)), []).append((rule, part))
    kinds = {"fill": 0, "line": 1, "marker": 2}
    ordered = sorted(groups.items(), key=lambda item: (item[0][0], kinds[item[0][1]]))
    layers = tuple(_maplibre_layer(spec, n, renderer, key[1:], members) for n, (key, members) in enumerate(ordered))
    solid = [p.colour[3] / 255 * r.opacity for r in renderer.rules for p in r.parts
             if isinstance(p, Fill) and p.hatch is None]
    return LayerStyle(spec.id, spec.geometry.value.removeprefix("Multi"), layers, tuple(_legend(renderer)),
                      tuple(sorted(set(renderer.not_converted))), max(solid, default=0.0))


def _gets(expression: Expr) -> set[str]:
    """The properties a MapLibre expression reads (["get", name] anywhere in it)."""
    if not isinstance(expression, list):
        return set()
    if len(expression) == 2 and expression[0] == "get" and isinstance(expression[1], str):
        return {expression[1]}
    return set().union(*(_gets(e) for e in expression)) if expression else set()


def fields_drawn(spec: LayerSpec, qml: str, where: str | None = None) -> frozenset[str]:
    """The layer's fields its style reads (the category field, the rules' filters): what a map needs in a tile."""
    renderer = read_renderer(spec, qml, where or spec.style)
    found = {renderer.attribute} if renderer.attribute else set()
    for rule in renderer.rules:
        found |= _gets(rule.condition)
    return frozenset(found & set(spec.field_names))


def draw_order(styles: list[LayerStyle]) -> list[LayerStyle]:
    """Bottom first: polygons, then lines, then points. Among polygons the most opaque fills go first, so no
    translucent layer (a red line, the districts) vanishes under an opaque one; among equally opaque ones the
    registry's later domains go first, so zoning lies under the physical city (buildings, water). Lines and
    points keep the registry's order (pipelines over roads)."""
    def key(item: tuple[int, LayerStyle]) -> tuple[float, ...]:
        index, style = item
        if style.geometry == "Polygon":
            return (GEOMETRY_ORDER["Polygon"], -round(style.fill_alpha, 2), -index)
        return (GEOMETRY_ORDER[style.geometry], 0, index)

    return [style for _, style in sorted(enumerate(styles), key=key)]
