"""Open an exported map with QGIS itself and print what QGIS sees, as JSON.

Run by the system Python that has QGIS (Debian `python3-qgis`), not the project's venv:
    QT_QPA_PLATFORM=offscreen /usr/bin/python3 qgis_check.py OUT_DIR
"""

import json
import sys
from pathlib import Path

from qgis.core import QgsApplication, QgsProject, QgsRasterLayer, QgsVectorLayer


def renderer_of(layer) -> dict:
    if isinstance(layer, QgsRasterLayer):
        renderer = layer.renderer()
        info = {"type": renderer.type()}
        if renderer.type() == "paletted":
            info["classes"] = [(c.value, c.label, c.color.name()) for c in renderer.classes()]
        return info
    renderer = layer.renderer()
    info = {"type": renderer.type()}
    if renderer.type() == "categorizedSymbol":
        info["attr"] = renderer.classAttribute()
        info["classes"] = [
            (str(c.value()), c.label(), c.symbol().color().name()) for c in renderer.categories()
        ]
    return info


def main(out_dir: Path) -> dict:
    report = {}
    raster = QgsRasterLayer(str(out_dir / "landcover.tif"), "landcover")
    report["raster_alone"] = {"valid": raster.isValid(), "crs": raster.crs().authid(), **renderer_of(raster)}
    raster.loadDefaultStyle()  # what QGIS does on open: the .qml beside the raster
    report["raster_with_qml"] = renderer_of(raster)

    vector = QgsVectorLayer(f"{out_dir / 'landcover.gpkg'}|layername=landcover", "landcover", "ogr")
    report["gpkg_landcover"] = {
        "valid": vector.isValid(), "crs": vector.crs().authid(), "features": vector.featureCount(),
        "default_style": vector.loadDefaultStyle()[1], **renderer_of(vector),
    }

    project = QgsProject.instance()
    report["project_read"] = project.read(str(out_dir / "landcover.qgz"))
    report["project_crs"] = project.crs().authid()
    report["project_layers"] = {
        layer.name(): {"valid": layer.isValid(), "source": layer.source(), **renderer_of(layer)}
        for layer in project.mapLayers().values()
    }
    return report


if __name__ == "__main__":
    QgsApplication.setPrefixPath("/usr", True)
    app = QgsApplication([], False)
    app.initQgis()
    print(json.dumps(main(Path(sys.argv[1]))))
    app.exitQgis()
