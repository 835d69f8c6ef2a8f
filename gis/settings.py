"""Settings, built once by the caller (CLI, app factory, tests) and passed in. Env prefix GIS_."""

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="GIS_", extra="ignore")

    database_url: str | None = Field(
        default=None, description="The primary: every write (refreshes, audit rows, jobs, keys, readings) goes "
        "here. Use this PostGIS instead of the embedded cluster; nothing is started. A libpq multi-host URL with "
        "target_session_attrs=read-write follows a promotion without a restart.")
    database_read_url: str | None = Field(
        default=None, description="Standbys for reads (libpq multi-host URL, e.g. postgresql://u:p@s1:5432,"
        "s2:5432/gis?target_session_attrs=standby). Layer reads go there unless a standby has not "
        "replayed the layer's current version yet; unset: reads go to the primary.")
    read_max_lag_s: float = Field(
        default=5.0, gt=0, description="A standby whose replay lags more than this many seconds is left for "
        "the primary until it catches up.")
    db_connect_timeout_s: int = Field(
        default=2, ge=2, description="Seconds a connection attempt may take (libpq connect_timeout; 2 at least); "
        "also the silent-network bound (tcp_user_timeout).")
    db_pool_timeout_s: float = Field(
        default=5.0, gt=0, description="Seconds a request may wait in the queue for a pooled connection (a busy "
        "service) before its 503 busy, with Retry-After; a database outage fails queued requests at once (the probe).")
    db_pool_max_waiting: int = Field(
        default=100, ge=0, description="Requests each service process queues for a pooled connection, per database; "
        "one more is answered 503 busy at once, with Retry-After (0: no bound).")
    db_request_parallel_workers: int = Field(
        default=0, ge=0, description="PostgreSQL's max_parallel_workers_per_gather on the service's request "
        "connections. 0: one request is one process; a service answering many requests at once keeps its cores "
        "busy without splitting one, and starting workers costs more than a request's whole query (an as-of "
        "download: 99 ms with two workers, 11 ms with none). Jobs and analyses keep the cluster's own value.")
    db_probe_interval_s: float = Field(
        default=0.5, gt=0, description="How often each service process probes each database (the circuit "
        "breaker; standby lag).")
    db_probe_timeout_s: float = Field(
        default=1.0, gt=0, description="A probe unanswered this long opens the breaker: requests get 503 at once "
        "and those waiting on the silent database are answered 503.")
    cluster_dir: Path = Field(default=Path(".gisdata/pg"), description="Data directory of the embedded cluster.")
    cluster_port: int = Field(default=54329, ge=1024, le=65535, description="Port of the embedded cluster.")
    database_name: str = Field(default="gis", description="The embedded cluster's database.")
    layers_dir: Path = Field(default=Path("layers"), description="The layer registry: one YAML file per layer, "
                             "and access-policy.yml.")
    styles_dir: Path = Field(default=Path("styles"), description="QML, SLD and MapLibre styles per layer.")
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
    host: str = Field(default="127.0.0.1", description="Address `gis serve` listens on (0.0.0.0: every one).")
    port: int = Field(default=8000, ge=1, le=65535, description="Port `gis serve` listens on.")
    pool_min_size: int = Field(default=2, ge=0, description="Connections each service process keeps open, per "
                               "database (primary; standbys).")
    pool_max_size: int = Field(default=10, ge=1, description="Most connections each service process opens, per "
                               "database: processes x this must stay under the server's max_connections.")
    tile_cache_mib: int = Field(
        default=64, ge=0,
        description="MiB of vector tiles each service process keeps (checked against the layer version); 0: none.",
    )
    audit_retention_days: int = Field(
        default=400, ge=1, description="Months of ops.audit_log kept, in days: `gis ops prune` drops whole "
        "monthly partitions older than this.")
    event_retention_days: int = Field(
        default=400, ge=1, description="Days of readings kept in the event layers partitioned by month (`partition: "
        "month`, sensor_readings): `gis ops prune` drops whole months older than this, corrections with them.")
    sync_job_retention_minutes: int = Field(
        default=60, ge=1, description="Minutes a synchronous process call's job row (and its result) is kept; "
        "asynchronous jobs follow audit_retention_days.")
    delivery_retention_days: int = Field(
        default=90, ge=1, description="Days the bytes of a finished delivery (ops.deliveries.content) are kept: "
        "`gis ops prune` drops older ones; who sent what, when, its checksum and its result stay.")
    tile_copy_interval_s: float = Field(
        default=10.0, ge=0, description="Seconds between a worker's checks for layers whose generalised tile copy "
        "(gis tiles) is behind the layer after a refresh or an edit; each worker and each service process that runs "
        "queued jobs checks, and one of them catches a layer up. 0: never (run `gis tiles` by hand).")
    temp_dir: Path | None = Field(
        default=None, description="Where the service and jobs write scratch files (downloads being written, "
        "uploaded files being read, deliveries unpacked), each in a directory of its own removed afterwards; "
        "default: the system's (TMPDIR).")
    city_extent: tuple[float, float, float, float] = Field(
        default=(122.2, 41.0, 124.0, 43.2),
        description="lon/lat box (EPSG:4490) every feature must fall inside; Shenyang with a margin.",
    )


class ServeSettings(BaseSettings):
    """How `gis serve` runs behind a proxy, env prefix GIS_SERVE_ (host and port are GIS_HOST, GIS_PORT)."""

    model_config = SettingsConfigDict(env_prefix="GIS_SERVE_", extra="ignore")

    workers: int = Field(default=1, ge=1, description="Worker processes (uvicorn); a dead one is replaced.")
    root_path: str = Field(
        default="", description="The path the service sits under behind a proxy (e.g. /gis): every link, the "
        "OpenAPI document, TileJSON and the map use it. A proxy may also send X-Forwarded-Prefix.")
    forwarded_allow_ips: str = Field(
        default="127.0.0.1", description="Proxies (comma-separated addresses, '*' for any) whose X-Forwarded-For, "
        "-Proto, -Host and -Prefix headers are believed.")
    access_log: bool = Field(default=True, description="One JSON line per request on standard error.")
