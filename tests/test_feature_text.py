"""The GeoJSON text PostgreSQL writes for a feature (gis.features.queries.feature_text), for the values where the
cheap paths and to_json part: coded values with and without characters JSON escapes, reals that are whole, finite,
not a number or infinite, NULLs. Each row's text must be JSON (strict: no NaN constant) holding the row's values."""

import json
import math
from typing import Any

import psycopg
import pytest
from psycopg import sql

from gis.features import crs as crs_
from gis.features.queries import feature_text
from gis.layers import LayerRegistry, LayerSpec

FIELDS = ("fid", "utility", "material", "diameter_mm", "pressure_class", "depth_start_m", "depth_end_m",
          "install_year", "owner", "status", "from_node", "to_node", "valid_from", "valid_to")
QUOTED = 'sewer "old"'  # a coded value JSON must escape: it never takes the plain path


def _strict(text: str) -> Any:
    def refuse(constant: str) -> None:
        raise ValueError(f"not JSON: {constant}")
    return json.loads(text, parse_constant=refuse)


@pytest.fixture(scope="module")
def pipelines(registry: LayerRegistry) -> LayerSpec:
    spec = registry["pipelines"]
    fields = tuple(f.model_copy(update={"values": (*(f.values or ()), QUOTED, "a\\b", "tab\there")})
                   if f.name == "utility" else f for f in spec.fields)
    return spec.model_copy(update={"fields": fields})


ROWS = [
    # fid, utility, material, depth_start_m, depth_end_m
    ("P-1", "sewer", "HDPE", 2.0, 1.25),
    ('P-"2"', QUOTED, 'say "hi"\n', -0.0, 1e-7),
    ("P-3", "a\\b", None, float("nan"), float("inf")),
    ("P-4", "tab\there", "\u0001ctl", float("-inf"), -3.5e20),
    ("P-5", "not listed \\ \"", "井盖", 1e15, None),
    ("P-6", None, "", 123456789.0, 0.1),
]


def test_every_row_is_strict_json_with_its_own_values(loaded_db_url: str, pipelines: LayerSpec) -> None:
    feature = feature_text(pipelines, crs_.CRS84, None, True)
    values = sql.SQL(", ").join(
        sql.SQL("({}::text, {}::text, {}::text, 300, 'low', {}::float8, {}::float8, 1999, 'city', 'in_service', "
                "'n1', 'n2', '2025-01-01T00:00:00Z'::timestamptz, NULL::timestamptz)").format(
            *(sql.Literal(v) for v in (fid, utility, material, start, end)))
        for fid, utility, material, start, end in ROWS)
    query = sql.SQL("SELECT {} FROM (VALUES {}) AS p ({}) ORDER BY p.fid").format(
        feature, values, sql.SQL(", ").join(sql.Identifier(n) for n in FIELDS))
    with psycopg.connect(loaded_db_url) as conn:
        texts = [row[0] for row in conn.execute(query).fetchall()]
    got = {f["id"]: f for f in map(_strict, texts)}
    assert sorted(got) == sorted(r[0] for r in ROWS)
    for fid, utility, material, start, end in ROWS:
        props = got[fid]["properties"]
        assert (props["utility"], props["material"]) == (utility, material), fid
        for name, value in (("depth_start_m", start), ("depth_end_m", end)):
            if value is None:
                assert props[name] is None
            elif math.isfinite(value):
                assert isinstance(props[name], float) and props[name] == value, (fid, name)  # 2.0 stays a real
            else:  # not a JSON number: a string naming it, as to_json writes it
                assert isinstance(props[name], str), (fid, name)
                parsed = float(props[name])
                assert math.isnan(parsed) if math.isnan(value) else parsed == value, (fid, name)
        assert props["diameter_mm"] == 300 and props["valid_to"] is None
        assert got[fid]["geometry"] is None
