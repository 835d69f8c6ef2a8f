"""`make bench`: the refresh benchmark against ogr2ogr and the OGC API benchmark against tipg and pygeoapi."""
