"""Edit one feature of a PostGIS layer the way a QGIS user does, and report what QGIS said, as JSON.

Run with the Python that has QGIS's bindings (Debian: /usr/bin/python3 with python3-qgis), headless:

    QT_QPA_PLATFORM=offscreen PGPASSWORD=... /usr/bin/python3 edit_postgis_layer.py --host 127.0.0.1 \
        --port 5432 --dbname gis --user editor pipeline.pipe_nodes N-000001 --move 0.001 0.0005 \
        --set state=closed

The layer opens with QgsVectorLayer(uri, name, "postgres"); then startEditing, the geometry moved by
(dx, dy) degrees, each attribute set, commitChanges: QGIS's own edit buffer and provider do the writing.
The report says whether the commit succeeded and, if not, QGIS's commit errors (the database's message).
"""

import argparse
import json
import sys

from open_postgis_layer import add_connection_arguments, error_text  # the same directory
from qgis.core import Qgis, QgsApplication, QgsDataSourceUri, QgsFeatureRequest, QgsVectorLayer


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_connection_arguments(parser)
    parser.add_argument("layer", metavar="SCHEMA.TABLE")
    parser.add_argument("fid", help="the feature's id (the fid column)")
    parser.add_argument("--move", nargs=2, type=float, metavar=("DX", "DY"), help="translate the geometry")
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE", help="change an attribute")
    return parser.parse_args(argv)


def edit(args: argparse.Namespace) -> dict[str, object]:
    schema, _, table = args.layer.partition(".")
    uri = QgsDataSourceUri()
    uri.setConnection(args.host, str(args.port), args.dbname, args.user, args.password)
    uri.setDataSource(schema, table, "geom", "", "fid")
    layer = QgsVectorLayer(uri.uri(False), table, "postgres")
    if not layer.isValid():
        return {"valid": False, "error": error_text(layer)}
    request = QgsFeatureRequest().setFilterExpression(f"\"fid\" = '{args.fid}'")
    feature = next(layer.getFeatures(request), None)
    if feature is None:
        return {"valid": True, "found": False}
    if not layer.startEditing():
        return {"valid": True, "found": True, "editable": False}
    if args.move:
        geometry = feature.geometry()
        geometry.translate(args.move[0], args.move[1])
        layer.changeGeometry(feature.id(), geometry)
    for assignment in args.set:
        name, _, value = assignment.partition("=")
        layer.changeAttributeValue(feature.id(), layer.fields().indexOf(name), value)
    committed = layer.commitChanges()
    errors = list(layer.commitErrors())
    if not committed:
        layer.rollBack()
    return {"valid": True, "found": True, "editable": True, "committed": committed, "errors": errors}


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    app = QgsApplication([], False)
    app.initQgis()
    try:
        report = {"qgis": Qgis.version(), **edit(args)}
    finally:
        app.exitQgis()
    print(json.dumps(report, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
