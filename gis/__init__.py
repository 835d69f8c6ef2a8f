"""The domain library of the spatio-temporal GIS cloud: layers, PostGIS, refresh jobs, analyses.

Nothing here imports FastAPI or pygeoapi, and nothing connects or reads the environment at import.
"""
