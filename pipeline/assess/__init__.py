"""Accuracy assessment and area estimation of a map by good practice (Olofsson et al. 2014).

    design  a stratified random sample of points by map class (:mod:`.design`), written beside
            the map as assessment.gpkg and listed in its QGIS project (:mod:`.samples`)
    label   reference labels: by hand in QGIS, or read from a reference raster (:mod:`.label`)
    report  error matrix in area proportions, accuracies and areas with 95% intervals
            (:mod:`.estimate`), written as json, markdown and png (:mod:`.report`)

The map's classes come from the map folder's own legend (:mod:`.legend`), whatever model made it.
"""
