"""What QGIS shows one database user: the spatial tables its PostGIS connection lists (the browser panel) and,
for each layer named, whether it opens, its feature count and the style QGIS gave it; as JSON.

Run with the Python that has QGIS's bindings (Debian: /usr/bin/python3 with python3-qgis), headless:

    QT_QPA_PLATFORM=offscreen PGPASSWORD=... /usr/bin/python3 postgis_as_user.py --host 127.0.0.1 \
        --port 5432 --dbname gis --user alice --key fid gis_planner.pipelines policing.incidents

The list comes from QGIS's own connection API with its default options (geometry_columns and the user's
privileges decide it; nothing here filters). Layers open with QgsVectorLayer(uri, name, "postgres"), so QGIS
itself looks up the default style in public.layer_styles. `--key` names the feature id column, which QGIS
needs for views (for a table it is the primary key anyway).
"""

import argparse
import json
import sys
from typing import Any

from open_postgis_layer import (  # the same directory: one reading of renderers
    add_connection_arguments,
    describe_renderer,
    error_text,
)
from qgis.core import (
    Qgis,
    QgsAbstractDatabaseProviderConnection,
    QgsApplication,
    QgsDataSourceUri,
    QgsProviderRegistry,
    QgsVectorLayer,
)


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_connection_arguments(parser)
    parser.add_argument("--key", default="", help="the feature id column of the layers")
    parser.add_argument("layers", nargs="*", metavar="SCHEMA.TABLE")
    return parser.parse_args(argv)


def connection_uri(args: argparse.Namespace) -> QgsDataSourceUri:
    uri = QgsDataSourceUri()
    uri.setConnection(args.host, str(args.port), args.dbname, args.user, args.password)
    return uri


def spatial_tables(args: argparse.Namespace) -> list[str]:
    metadata = QgsProviderRegistry.instance().providerMetadata("postgres")
    connection = metadata.createConnection(connection_uri(args).uri(False), {})
    tables = connection.tables("", QgsAbstractDatabaseProviderConnection.TableFlag.Vector)
    return sorted({f"{t.schema()}.{t.tableName()}" for t in tables})


def open_layer(args: argparse.Namespace, qualified: str) -> dict[str, Any]:
    schema, _, table = qualified.partition(".")
    uri = connection_uri(args)
    uri.setDataSource(schema, table, "geom", "", args.key)
    layer = QgsVectorLayer(uri.uri(False), table, "postgres")
    if not layer.isValid():
        return {"layer": qualified, "valid": False, "error": error_text(layer)}
    fields = [f.name() for f in layer.fields()]
    return {"layer": qualified, "valid": True, "feature_count": layer.featureCount(), "fields": fields,
            **describe_renderer(layer)}


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    app = QgsApplication([], False)
    app.initQgis()
    try:
        report = {"qgis": Qgis.version(), "tables": spatial_tables(args),
                  "layers": [open_layer(args, q) for q in args.layers]}
    finally:
        app.exitQgis()
    print(json.dumps(report, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
