"""Open a .qgs project with QGIS and report what QGIS made of it, as JSON.

Run with the Python that has QGIS's bindings (Debian: /usr/bin/python3 with python3-qgis), headless:

    QT_QPA_PLATFORM=offscreen /usr/bin/python3 open_project.py project.qgs

For each layer: its id, name, provider, validity, feature count, renderer (type and class attribute)
and the layer-tree group it sits in.
"""

import json
import sys
from typing import Any

from qgis.core import (
    Qgis,
    QgsApplication,
    QgsCategorizedSymbolRenderer,
    QgsGraduatedSymbolRenderer,
    QgsLayerTreeGroup,
    QgsLayerTreeLayer,
    QgsProject,
    QgsVectorLayer,
)


def _renderer(layer: QgsVectorLayer) -> dict[str, Any]:
    renderer = layer.renderer()
    if renderer is None:
        return {"renderer": None}
    found: dict[str, Any] = {"renderer": renderer.type()}
    if isinstance(renderer, (QgsCategorizedSymbolRenderer, QgsGraduatedSymbolRenderer)):
        found["attribute"] = renderer.classAttribute()
    return found


def _groups(project: QgsProject) -> dict[str, str]:
    """layer id -> the name of the group holding it ('' at the root)."""
    found: dict[str, str] = {}

    def walk(group: QgsLayerTreeGroup, name: str) -> None:
        for child in group.children():
            if isinstance(child, QgsLayerTreeLayer):
                found[child.layerId()] = name
            elif isinstance(child, QgsLayerTreeGroup):
                walk(child, child.name())

    walk(project.layerTreeRoot(), "")
    return found


def describe(path: str) -> dict[str, Any]:
    project = QgsProject.instance()
    read = project.read(path)
    groups = _groups(project)
    layers = []
    for layer_id, layer in project.mapLayers().items():
        entry: dict[str, Any] = {"id": layer_id, "name": layer.name(), "provider": layer.providerType(),
                                 "valid": layer.isValid(), "group": groups.get(layer_id)}
        if layer.isValid() and isinstance(layer, QgsVectorLayer):
            entry["feature_count"] = layer.featureCount()
            entry["fields"] = [f.name() for f in layer.fields()]
            entry.update(_renderer(layer))
        layers.append(entry)
    return {"qgis": Qgis.version(), "read": read, "title": project.title(),
            "groups": [g.name() for g in project.layerTreeRoot().children() if isinstance(g, QgsLayerTreeGroup)],
            "layers": layers}


def main(argv: list[str]) -> int:
    app = QgsApplication([], False)
    app.initQgis()
    try:
        report = describe(argv[0])
    finally:
        app.exitQgis()
    print(json.dumps(report, ensure_ascii=False))
    return 0 if report["read"] and all(layer["valid"] for layer in report["layers"]) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
