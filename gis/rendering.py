"""Every HTML page and report, and every SVG drawing in them, is rendered here from the Jinja2 templates in
gis/templates/, with autoescaping always on: text from the data (a feature's attributes, a caller's query,
a rule's title) can never become markup, so an injected <script> is shown as text, never run.

The pages carry no inline script (the service's Content-Security-Policy allows scripts only from its own
static files). Drawings are computed here as numbers and named colours (`Shape`); the templates write
them out, escaping every value as they do every text.
"""

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jinja2
import orjson

TEMPLATES_DIR = Path(__file__).parent / "templates"
PYGEOAPI_TEMPLATES_DIR = TEMPLATES_DIR / "pygeoapi"  # pygeoapi's process and job pages, ours instead


@dataclass(frozen=True)
class Shape:
    """One SVG element of a drawing: `element` and the attribute names are ours; every value is escaped."""

    element: str  # circle, path, polyline, line, text, rect
    attrs: Mapping[str, Any]
    title: str = ""  # a tooltip (<title>), from the data
    href: str | None = None  # a link around the element
    text: str = ""  # the element's text (for <text>)


@dataclass(frozen=True)
class Drawing:
    """An SVG: its size and shapes in drawing order."""

    width: int
    height: int
    shapes: list[Shape] = field(default_factory=list)
    css_class: str | None = None
    background: str | None = "#f7f7f4"


def cell(value: Any) -> str:
    """A value as table text: None as a dash, lists and objects as JSON."""
    if value is None:
        return "—"
    if isinstance(value, list | dict):
        return orjson.dumps(value).decode()
    return str(value)


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES_DIR), autoescape=True,
                             undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    env.filters["cell"] = cell
    env.filters["area"] = lambda value: f"{value:,.2f}"
    return env


_ENV = _environment()


def render(template: str, **context: Any) -> str:
    """A template of gis/templates/ rendered with `context` (autoescaped)."""
    return _ENV.get_template(template).render(**context)


def svg(drawing: Drawing) -> str:
    """A drawing as SVG markup (for an image/svg+xml answer, or to place in a page)."""
    return render("svg.svg", drawing=drawing)
