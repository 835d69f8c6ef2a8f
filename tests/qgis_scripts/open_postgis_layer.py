"""Open PostGIS tables the way a QGIS user does and report the style QGIS gave each one, as JSON.

Run with the Python that has QGIS's bindings (Debian: /usr/bin/python3 with python3-qgis), headless:

    QT_QPA_PLATFORM=offscreen /usr/bin/python3 open_postgis_layer.py --host 127.0.0.1 --port 5432 \
        --dbname gis --user postgres pipeline.pipelines planning.land_use_plan

The password comes from --password or, better (it stays out of the process list), from PGPASSWORD.
Each layer is opened with QgsVectorLayer(uri, name, "postgres") and QGIS's default options, so QGIS
itself looks up the default style in public.layer_styles; nothing here loads a style.
"""

import argparse
import json
import os
import sys
from typing import Any

from qgis.core import (
    Qgis,
    QgsApplication,
    QgsCategorizedSymbolRenderer,
    QgsDataSourceUri,
    QgsErrorMessage,
    QgsGraduatedSymbolRenderer,
    QgsRuleBasedRenderer,
    QgsSingleSymbolRenderer,
    QgsVectorLayer,
)


def add_connection_arguments(parser: argparse.ArgumentParser) -> None:
    """The libpq parameters of a QGIS PostGIS connection; the password defaults to PGPASSWORD."""
    parser.add_argument("--host", required=True)
    parser.add_argument("--port", required=True)
    parser.add_argument("--dbname", required=True)
    parser.add_argument("--user", required=True)
    parser.add_argument("--password", default=os.environ.get("PGPASSWORD", ""))


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_connection_arguments(parser)
    parser.add_argument("--geometry-column", default="geom")
    parser.add_argument("layers", nargs="+", metavar="SCHEMA.TABLE")
    return parser.parse_args(argv)


def layer_uri(args: argparse.Namespace, schema: str, table: str, wkb_type: int | None = None) -> str:
    """The URI as the browser builds it; with wkb_type, the form that also names the geometry type."""
    uri = QgsDataSourceUri()
    uri.setConnection(args.host, str(args.port), args.dbname, args.user, args.password)
    uri.setDataSource(schema, table, args.geometry_column)
    if wkb_type is not None:
        uri.setWkbType(wkb_type)
    return uri.uri(False)


def describe_renderer(layer: QgsVectorLayer) -> dict[str, Any]:
    renderer = layer.renderer()
    if renderer is None:
        return {"renderer": None}
    out: dict[str, Any] = {"renderer": renderer.type()}
    if isinstance(renderer, QgsCategorizedSymbolRenderer):
        out["attribute"] = renderer.classAttribute()
        out["categories"] = [
            {"value": c.value(), "label": c.label(), "color": c.symbol().color().name()} for c in renderer.categories()
        ]
    elif isinstance(renderer, QgsGraduatedSymbolRenderer):
        out["attribute"] = renderer.classAttribute()
        out["ranges"] = [{"lower": r.lowerValue(), "upper": r.upperValue()} for r in renderer.ranges()]
    elif isinstance(renderer, QgsRuleBasedRenderer):
        out["rules"] = [r.filterExpression() for r in renderer.rootRule().children()]
    elif isinstance(renderer, QgsSingleSymbolRenderer):
        out["color"] = renderer.symbol().color().name()
    return out


def error_text(layer: QgsVectorLayer) -> str:
    """Why the layer is invalid (QgsError.summary() crashes on an empty error in 3.22, so not that)."""
    provider = layer.dataProvider()
    for error in (layer.error(), provider.error() if provider is not None else None):
        if error is not None and not error.isEmpty():
            return error.message(QgsErrorMessage.Text)
    return "QGIS reports the layer invalid without a message (missing table or no permission?)"


def describe_layer(args: argparse.Namespace, qualified: str) -> dict[str, Any]:
    schema, _, table = qualified.partition(".")
    layer = QgsVectorLayer(layer_uri(args, schema, table), table, "postgres")
    result: dict[str, Any] = {"layer": qualified, "valid": layer.isValid()}
    if not layer.isValid():
        result["error"] = error_text(layer)
        return result
    fields = layer.fields()
    result["feature_count"] = layer.featureCount()
    result["labels_enabled"] = layer.labelsEnabled()
    result["aliases"] = {f.name(): layer.attributeAlias(i) for i, f in enumerate(fields) if layer.attributeAlias(i)}
    result.update(describe_renderer(layer))
    # The same table through the URI form that carries the geometry type (type=...), as saved projects do.
    typed = QgsVectorLayer(layer_uri(args, schema, table, layer.wkbType()), table, "postgres")
    result["typed_uri"] = {"valid": typed.isValid(), **(describe_renderer(typed) if typed.isValid() else {})}
    result["typed_uri"].pop("categories", None)
    return result


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    app = QgsApplication([], False)
    app.initQgis()
    try:
        report = {"qgis": Qgis.version(), "layers": [describe_layer(args, q) for q in args.layers]}
    finally:
        app.exitQgis()
    print(json.dumps(report, ensure_ascii=False))
    return 0 if all(layer["valid"] for layer in report["layers"]) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
