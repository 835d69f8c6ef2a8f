"""Load OGC API Features layers with QGIS's OAPIF provider and report what QGIS saw, as JSON.

Run with the Python that has QGIS's bindings (Debian: /usr/bin/python3 with python3-qgis), headless:

    QT_QPA_PLATFORM=offscreen /usr/bin/python3 qgis_oapif.py http://127.0.0.1:8000 pipelines roads

For each layer: whether it is valid, QGIS's feature count (numberMatched), the features it read by
paging through the whole layer, the distinct ids, and each field's QGIS type name. An optional
--query-suffix is appended to the URL the way users add a credential (?api_key=...).
"""

import argparse
import json
import sys
from typing import Any

from qgis.core import Qgis, QgsApplication, QgsFeatureRequest, QgsVectorLayer


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url", help="the service's landing page")
    parser.add_argument("layers", nargs="+")
    parser.add_argument("--query-suffix", default="", help="e.g. api_key=secret, added to the service URL")
    return parser.parse_args(argv)


def describe(url: str, name: str) -> dict[str, Any]:
    uri = f"url='{url}' typename='{name}' version='auto' restrictToRequestBBOX='0'"
    layer = QgsVectorLayer(uri, name, "OAPIF")
    report: dict[str, Any] = {"layer": name, "valid": layer.isValid()}
    if not layer.isValid():
        report["error"] = layer.error().message() if layer.error() else "invalid"
        return report
    report["feature_count"] = layer.featureCount()
    ids: list[str] = []
    read = 0
    id_field = layer.fields().indexOf("id")
    for feature in layer.getFeatures(QgsFeatureRequest()):
        read += 1
        if id_field >= 0:
            ids.append(str(feature.attribute(id_field)))
    report["features_read"] = read
    report["distinct_ids"] = len(set(ids))
    report["fields"] = {f.name(): f.typeName() for f in layer.fields()}
    report["geometry_type"] = layer.wkbType()
    return report


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    url = args.url.rstrip("/") + (f"?{args.query_suffix}" if args.query_suffix else "")
    app = QgsApplication([], False)
    app.initQgis()
    try:
        report = {"qgis": Qgis.version(), "layers": [describe(url, name) for name in args.layers]}
    finally:
        app.exitQgis()
    print(json.dumps(report, ensure_ascii=False))
    return 0 if all(layer["valid"] for layer in report["layers"]) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
