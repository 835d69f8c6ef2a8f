"""One module per resource, named by the first segment of its URL. No router imports another: what they share
lives in services/common/ (HTTP) or gis/ (no HTTP)."""
