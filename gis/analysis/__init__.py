"""Analyses over the layers, as functions that build SQL and read its results (no web framework here).

overlap.py       a proposed project against the overlap rules (layers/overlap-rules.yml)
plan_conflicts.py one plan layer against another: conflict patches with area, class and disposal
proposal.py      reading a proposal (GeoJSON, an uploaded file) into a checked CGCS2000 geometry
rules.py         the rules file, validated against the layer registry
report.py        a check as JSON, GeoJSON and a self-contained HTML page
"""
