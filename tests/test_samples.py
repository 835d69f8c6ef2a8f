"""The sample-city generator: each layer's delivery exists, reads, matches its layer file, is deterministic.

The generator runs as the script it is (subprocess, --scale small) into a temporary directory, once per
module for the data under test and twice more for the determinism checks. No database is needed.
"""

import subprocess
import sys
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pyogrio
import pytest
import shapely
from geopandas.testing import assert_geodataframe_equal

from gis.crs import gcj02_to_wgs84, is_gcj02, to_storage_crs
from gis.layers import FieldType, LayerRegistry, LayerSpec, SourceFormat, load_registry

ROOT = Path(__file__).resolve().parent.parent
GENERATOR = ROOT / "data-samples" / "generate.py"
REFERENCE = ROOT / "data-samples" / "reference" / "shenyang_admin_boundaries_gcj02.geojson"
SEED = 2026

OGR_TYPES = {
    FieldType.text: {"OFTString"},
    FieldType.integer: {"OFTInteger", "OFTInteger64"},
    FieldType.bigint: {"OFTInteger64"},
    FieldType.real: {"OFTReal"},
    FieldType.boolean: {"OFTInteger"},
    FieldType.date: {"OFTDate"},
    FieldType.timestamp: {"OFTDateTime"},
}


def generate(out: Path, seed: int) -> Path:
    result = subprocess.run(
        [sys.executable, str(GENERATOR), "--scale", "small", "--out", str(out), "--seed", str(seed)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    return out


@pytest.fixture(scope="module")
def layers() -> LayerRegistry:
    return load_registry(ROOT / "layers", ROOT / "styles")


@pytest.fixture(scope="module")
def samples(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate(tmp_path_factory.mktemp("samples"), SEED)


@pytest.fixture(scope="module")
def samples_again(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate(tmp_path_factory.mktemp("samples-again"), SEED)


@pytest.fixture(scope="module")
def samples_other_seed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate(tmp_path_factory.mktemp("samples-other"), SEED + 1)


@pytest.fixture(scope="module")
def city() -> shapely.Geometry:
    """The city outline converted from GCJ-02, as the generator and the refresh see it."""
    reference = pyogrio.read_dataframe(REFERENCE)
    gcj = reference.geometry.values[(reference["level"] == "市").to_numpy()][0]
    outline = shapely.transform(gcj, gcj02_to_wgs84)
    shapely.prepare(outline)  # tens of thousands of points are tested against it (as the first argument)
    return outline


def source_columns(spec: LayerSpec) -> list[str]:
    columns = [spec.source.fid]
    columns += [spec.source.fields.get(f.name, f.name) for f in spec.fields]
    columns += [c for c in (spec.source.valid_from, spec.source.valid_to) if c]
    return list(dict.fromkeys(columns))  # admin_districts: the id column is also a field


def read_source(spec: LayerSpec, root: Path) -> gpd.GeoDataFrame:
    path = root / spec.source.path
    if spec.source.format is SourceFormat.csv:
        return pyogrio.read_dataframe(
            path, X_POSSIBLE_NAMES=spec.source.x, Y_POSSIBLE_NAMES=spec.source.y, KEEP_GEOM_COLUMNS="NO"
        )
    return pyogrio.read_dataframe(path, layer=spec.source.layer)


def storage_geometries(spec: LayerSpec, frame: gpd.GeoDataFrame) -> np.ndarray:
    return to_storage_crs(np.asarray(frame.geometry.values, dtype=object), spec.source.crs)


def test_every_layer_source_exists_so_the_registry_loads_against_the_samples(samples: Path) -> None:
    registry = load_registry(ROOT / "layers", ROOT / "styles", samples)
    assert len(registry) == 21  # 20, and pipeline.inspections


def test_every_layer_reads_with_its_declared_columns_and_rows(layers: LayerRegistry, samples: Path) -> None:
    for spec in layers.values():
        frame = read_source(spec, samples)
        assert len(frame) > 0, spec.id
        assert sorted(frame.columns.drop("geometry")) == sorted(source_columns(spec)), spec.id
        assert frame[spec.source.fid].is_unique, spec.id


def test_every_layer_has_its_declared_geometry_type(layers: LayerRegistry, samples: Path) -> None:
    for spec in layers.values():
        frame = read_source(spec, samples)
        assert set(frame.geom_type) == {spec.geometry.value}, spec.id
        assert frame.geometry.is_valid.all(), spec.id


def test_vector_fields_are_written_with_their_declared_types(layers: LayerRegistry, samples: Path) -> None:
    for spec in layers.values():
        if spec.source.format is SourceFormat.csv:
            continue
        info = pyogrio.read_info(samples / spec.source.path, layer=spec.source.layer)
        types = dict(zip(info["fields"], info["ogr_types"], strict=True))
        for f in spec.fields:
            assert types[spec.source.fields.get(f.name, f.name)] in OGR_TYPES[f.type], (spec.id, f.name)
        for column in (spec.source.valid_from, spec.source.valid_to):
            if column:
                assert types[column] == "OFTDate", (spec.id, column)


def test_csv_dates_are_iso_and_timestamps_carry_the_china_offset(
    layers: LayerRegistry, samples: Path
) -> None:
    for spec in layers.values():
        if spec.source.format is not SourceFormat.csv:
            continue
        frame = pd.read_csv(samples / spec.source.path, dtype=str, keep_default_na=False)
        for f in spec.fields:
            values = frame[spec.source.fields.get(f.name, f.name)]
            filled = values[values != ""]
            if f.type is FieldType.date:
                assert filled.str.fullmatch(r"\d{4}-\d{2}-\d{2}").all(), (spec.id, f.name)
            elif f.type is FieldType.timestamp:
                assert filled.str.fullmatch(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\+08:00").all(), (
                    spec.id,
                    f.name,
                )
            elif f.type in (FieldType.integer, FieldType.bigint):
                assert filled.str.fullmatch(r"-?\d+").all(), (spec.id, f.name)
            elif f.type is FieldType.real:
                assert pd.to_numeric(filled, errors="coerce").notna().all(), (spec.id, f.name)


def test_coded_fields_hold_only_their_declared_values(layers: LayerRegistry, samples: Path) -> None:
    for spec in layers.values():
        frame = read_source(spec, samples)
        for f in spec.fields:
            column = frame[spec.source.fields.get(f.name, f.name)]
            if f.required:
                assert column.notna().all() and (column.astype(str) != "").all(), (spec.id, f.name)
            if f.values:
                present = set(column.dropna().astype(str)) - {""}
                assert present <= set(f.values), (spec.id, f.name, sorted(present - set(f.values)))


def test_admin_districts_are_the_real_boundaries_unchanged(layers: LayerRegistry, samples: Path) -> None:
    delivered = read_source(layers["admin_districts"], samples).sort_values("adcode", ignore_index=True)
    reference = pyogrio.read_dataframe(REFERENCE).sort_values("adcode", ignore_index=True)
    assert len(delivered) == 14
    assert list(delivered["adcode"]) == list(reference["adcode"].astype(str))
    assert list(delivered["name"]) == list(reference["name"])
    for ours, theirs in zip(delivered.geometry.values, reference.geometry.values, strict=True):
        assert shapely.equals_exact(shapely.normalize(ours), shapely.normalize(theirs), tolerance=1e-7)


def test_gcj02_deliveries_converted_back_lie_inside_the_city(
    layers: LayerRegistry, samples: Path, city: shapely.Geometry
) -> None:
    gcj_layers = [s for s in layers.values() if is_gcj02(s.source.crs) and s.id != "admin_districts"]
    assert {s.id for s in gcj_layers} >= {"place_names", "police_stations", "construction_projects"}
    for spec in gcj_layers:
        geometries = shapely.transform(read_source(spec, samples).geometry.values, gcj02_to_wgs84)
        assert shapely.contains(city, geometries).all(), spec.id
        # Left unconverted they would sit a few hundred metres off: the delivery really is GCJ-02.
        assert not shapely.equals_exact(geometries, read_source(spec, samples).geometry.values, 1e-4).any()


def test_every_synthetic_feature_lies_inside_the_city(
    layers: LayerRegistry, samples: Path, city: shapely.Geometry
) -> None:
    for spec in layers.values():
        if spec.id == "admin_districts":
            continue
        assert shapely.contains(city, storage_geometries(spec, read_source(spec, samples))).all(), spec.id


def test_pipeline_ends_are_pipe_nodes(layers: LayerRegistry, samples: Path) -> None:
    pipes = read_source(layers["pipelines"], samples)
    nodes = read_source(layers["pipe_nodes"], samples).set_index("node_id")
    assert 2000 <= len(pipes) <= 5000
    assert pipes["from_node"].isin(nodes.index).all() and pipes["to_node"].isin(nodes.index).all()
    coords = shapely.get_coordinates(pipes.geometry.values).reshape(len(pipes), 2, 2)
    starts = shapely.get_coordinates(nodes.geometry.loc[pipes["from_node"]].values)
    ends = shapely.get_coordinates(nodes.geometry.loc[pipes["to_node"]].values)
    assert np.allclose(coords[:, 0], starts, rtol=0, atol=1e-6)
    assert np.allclose(coords[:, 1], ends, rtol=0, atol=1e-6)
    utilities = nodes.loc[pipes["from_node"], "utility"].to_numpy()
    assert (utilities == pipes["utility"].to_numpy()).all()


def components(edges: pd.DataFrame) -> int:
    """How many connected pieces the from_node/to_node graph has (union-find)."""
    parent: dict[str, str] = {}

    def find(node: str) -> str:
        while parent.setdefault(node, node) != node:
            parent[node] = parent[parent[node]]
            node = parent[node]
        return node

    for a, b in zip(edges["from_node"], edges["to_node"], strict=True):
        parent[find(a)] = find(b)
    return len({find(n) for n in parent})


def test_each_utility_network_is_one_connected_graph(layers: LayerRegistry, samples: Path) -> None:
    pipes = read_source(layers["pipelines"], samples)
    for utility, group in pipes.groupby("utility"):
        assert components(group) == 1, utility


def test_pipelines_give_the_checks_something_to_find(layers: LayerRegistry, samples: Path) -> None:
    pipes = read_source(layers["pipelines"], samples)
    nodes = read_source(layers["pipe_nodes"], samples)
    shallowest = pipes[["depth_start_m", "depth_end_m"]].min(axis=1)
    assert (pipes["utility"].isin(["sewer", "storm"]) & (shallowest < 0.7)).any()
    assert ((pipes["utility"] == "gas") & (shallowest < 0.9)).any()
    assert (pipes["status"] == "out_of_service").any()
    assert set(pipes.loc[pipes["utility"] == "gas", "pressure_class"]) > {"low", "medium_a"}
    assert set(pipes.loc[pipes["utility"] != "gas", "pressure_class"]) == {"none"}
    valves = nodes[nodes["node_type"] == "valve"]
    assert set(valves["utility"]) >= {"water", "gas"} and (valves["state"] == "closed").any()
    assert set(nodes.loc[nodes["node_type"] == "hydrant", "utility"]) == {"water"}
    assert set(nodes.loc[nodes["utility"].isin(["sewer", "storm"]), "node_type"]) == {"manhole"}


def test_some_parallel_pipes_are_closer_than_gb50289_allows(layers: LayerRegistry, samples: Path) -> None:
    pipes = read_source(layers["pipelines"], samples)
    geoms = pipes.geometry.values
    drains = np.flatnonzero(pipes["utility"].isin(["sewer", "storm"]).to_numpy())
    near, other = shapely.STRtree(geoms).query(geoms[drains], predicate="dwithin", distance=0.95)
    kinds = pipes["utility"].to_numpy()[other]
    # Gas, water and telecom within 0.95 m of a drain break every GB 50289 minimum for the pair.
    assert np.isin(kinds, ["gas", "water", "telecom"]).any()
    assert (shapely.distance(geoms[drains[near]], geoms[other])[np.isin(kinds, ["gas", "water"])] > 0).any()


def test_buildings_stay_off_the_carriageways(layers: LayerRegistry, samples: Path) -> None:
    roads = read_source(layers["roads"], samples)
    buildings = read_source(layers["buildings"], samples).to_crs(roads.crs)
    carriageways = roads.geometry.buffer(roads["WIDTH_M"] / 2, cap_style="flat").values
    hits = shapely.STRtree(buildings.geometry.values).query(carriageways, predicate="intersects")
    assert hits.shape[1] == 0


def test_police_jurisdictions_partition_the_area_one_per_station(
    layers: LayerRegistry, samples: Path
) -> None:
    stations = read_source(layers["police_stations"], samples)
    cells = read_source(layers["police_jurisdictions"], samples)
    assert sorted(cells["STATION"]) == sorted(stations["station_id"])
    geoms = storage_geometries(layers["police_jurisdictions"], cells)
    assert shapely.union_all(geoms).area == pytest.approx(shapely.area(geoms).sum(), rel=1e-9)
    points = dict(
        zip(stations["station_id"], storage_geometries(layers["police_stations"], stations), strict=True)
    )
    assert all(g.contains(points[s]) for g, s in zip(geoms, cells["STATION"], strict=True))


def test_a_future_plan_supersedes_parcels_on_its_effective_date(layers: LayerRegistry, samples: Path) -> None:
    plan = read_source(layers["land_use_plan"], samples)
    future = plan[plan["PLAN_NAME"] == "沈阳市2030控规修编"]
    assert len(future) > 0
    assert future["EFFECTIVE"].dt.year.between(2028, 2030).all()
    expiring = plan[plan["EXPIRES"].notna()]
    assert len(expiring) > 0 and set(expiring["EXPIRES"]) <= set(future["EFFECTIVE"])


def test_projects_cross_each_control_line_somewhere(layers: LayerRegistry, samples: Path) -> None:
    def union(layer_id: str) -> shapely.Geometry:
        return shapely.union_all(storage_geometries(layers[layer_id], read_source(layers[layer_id], samples)))

    projects = storage_geometries(
        layers["construction_projects"], read_source(layers["construction_projects"], samples)
    )
    assert shapely.intersects(projects, union("ecological_redline")).any()
    assert shapely.intersects(projects, union("basic_farmland")).any()
    assert (~shapely.within(projects, union("development_boundary"))).any()
    assert shapely.within(projects, union("development_boundary")).sum() > len(projects) / 2


def test_observations_cover_a_year_per_air_station_and_pollutant(
    layers: LayerRegistry, samples: Path
) -> None:
    observations = pd.read_csv(samples / layers["observations"].source.path)
    stations = pd.read_csv(samples / layers["monitoring_stations"].source.path)
    air = set(stations.loc[stations["station_type"] == "air", "station_code"])
    assert 12 <= len(stations) <= 20 and set(observations["station"]) == air
    assert observations["observed_at"].min().startswith("2025-11-01")
    assert observations["observed_at"].max().startswith("2026-10-31")
    per_series = observations.groupby(["station", "pollutant"]).size()
    assert len(per_series) == len(air) * 7 and (per_series == 365).all()
    assert len(observations) <= 50_000


def test_the_same_seed_gives_the_same_content(
    layers: LayerRegistry, samples: Path, samples_again: Path
) -> None:
    for spec in layers.values():
        assert_geodataframe_equal(
            read_source(spec, samples), read_source(spec, samples_again), check_less_precise=False
        )


def test_another_seed_gives_other_content(
    layers: LayerRegistry, samples: Path, samples_other_seed: Path
) -> None:
    for spec in layers.values():
        ours, theirs = read_source(spec, samples), read_source(spec, samples_other_seed)
        same = len(ours) == len(theirs) and ours.drop(columns="geometry").equals(
            theirs.drop(columns="geometry")
        )
        same = same and bool(shapely.equals_exact(ours.geometry.values, theirs.geometry.values, 0).all())
        assert same == (spec.id == "admin_districts"), spec.id  # only the real boundaries stay put
