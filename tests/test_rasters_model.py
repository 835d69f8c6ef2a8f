"""Raster layer files and rendering, without a database: the registry's rules and the drawing functions."""

from pathlib import Path

import numpy as np
import pytest

from gis.errors import ConfigError
from gis.layers import LayerRegistry, RasterSpec, load_raster_file, load_registry
from gis.rasters import render


def test_rasters_are_kept_apart_from_the_vector_layers(registry: LayerRegistry) -> None:
    assert set(registry.rasters) == {"dem", "imagery", "land_cover"}
    assert not set(registry.rasters) & set(registry)
    assert all(not isinstance(spec, RasterSpec) for spec in registry.values())


def _write(tmp_path: Path, text: str) -> Path:
    folder = tmp_path / "layers" / "rasters" / "base"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "dem.yml"
    path.write_text(text, encoding="utf-8")
    return path


def test_a_class_grid_must_not_be_averaged(tmp_path: Path) -> None:
    source = (Path(__file__).resolve().parent.parent / "layers/rasters/base/land_cover.yml").read_text("utf-8")
    path = _write(tmp_path, source.replace("id: land_cover", "id: dem").replace("resampling: nearest",
                                                                                "resampling: bilinear"))
    with pytest.raises(ConfigError, match=r"dem.yml: .*class codes are resampled with nearest"):
        load_raster_file(path)


def test_a_raster_id_may_not_repeat_a_vector_layer_id(tmp_path: Path) -> None:
    root = Path(__file__).resolve().parent.parent
    layers = tmp_path / "layers"
    (layers / "base").mkdir(parents=True)
    (layers / "base" / "roads.yml").write_text((root / "layers/base/roads.yml").read_text("utf-8"), "utf-8")
    folder = layers / "rasters" / "base"
    folder.mkdir(parents=True)
    text = (root / "layers/rasters/base/dem.yml").read_text("utf-8").replace("id: dem", "id: roads")
    (folder / "roads.yml").write_text(text, "utf-8")
    with pytest.raises(ConfigError, match="'roads' is already declared"):
        load_registry(layers, root / "styles")


def test_relief_is_lit_from_the_north_west() -> None:
    rows, cols = np.mgrid[0:5, 0:5].astype(float)
    facing_north_west = rows + cols  # rises to the south (rows) and east: faces the sun
    assert render.hillshade(facing_north_west, 1.0, 1.0)[2, 2] > 0.95
    assert render.hillshade(-facing_north_west, 1.0, 1.0)[2, 2] == pytest.approx(0.0)
    assert render.hillshade(np.zeros((5, 5)), 1.0, 1.0)[2, 2] == pytest.approx(np.sin(np.radians(45)))


def test_class_colours_are_exact_and_unknown_codes_transparent(registry: LayerRegistry) -> None:
    spec = registry.rasters["land_cover"]
    codes = np.array([[[1, 4, 9]]], dtype=np.uint8)
    image = render.render(codes, codes[0] != 0, spec)
    assert tuple(image[0, 0]) == (0x3A, 0x7B, 0xD5, 255) and tuple(image[0, 1]) == (0x27, 0xAE, 0x60, 255)
    assert image[0, 2, 3] == 0
