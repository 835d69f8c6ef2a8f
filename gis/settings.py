"""Settings, built once by the caller (CLI, app factory, tests) and passed in. Env prefix GIS_."""

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="GIS_", extra="ignore")

    database_url: str | None = Field(
        default=None, description="Use this PostGIS instead of the embedded cluster; nothing is started."
    )
    cluster_dir: Path = Field(default=Path(".gisdata/pg"), description="Data directory of the embedded cluster.")
    cluster_port: int = Field(default=54329, ge=1024, le=65535, description="Port of the embedded cluster.")
    database_name: str = "gis"
    layers_dir: Path = Path("layers")
    styles_dir: Path = Path("styles")
    samples_dir: Path = Field(
        default=Path("data-samples/generated/small"),
        description="Where layer sources are found; each layer's source.path is relative to it.",
    )
    rejects_dir: Path = Field(default=Path(".gisdata/rejects"), description="Where refresh rejects files go.")
    db_log_file: Path | None = Field(
        default=None, description="The PostgreSQL server log whose direct reads are copied into the audit log "
        "(gis audit import-db-log, GET /audit); default: the embedded cluster's log, when it is the database.")
    rasters_dir: Path = Field(
        default=Path(".gisdata/rasters"),
        description="Where raster refreshes write their Cloud-Optimised GeoTIFFs, one file per version.",
    )
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)
    pool_min_size: int = 2
    pool_max_size: int = 10
    tile_cache_mib: int = Field(
        default=64, ge=0,
        description="MiB of vector tiles each service process keeps (checked against the layer version); 0: none.",
    )
    city_extent: tuple[float, float, float, float] = Field(
        default=(122.2, 41.0, 124.0, 43.2),
        description="lon/lat box (EPSG:4490) every feature must fall inside; Shenyang with a margin.",
    )
