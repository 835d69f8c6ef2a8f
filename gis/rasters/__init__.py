"""Raster layers: refresh of delivered GeoTIFFs into versioned COGs, reads, rendering, sampling, profiles."""
