"""The servers compared: ours, tipg and pygeoapi, each from PyPI in its own venv under bench/.peers/.

Every configuration is generated here from the layer registry: the same layers, the same database, the
same loopback host, the same number of uvicorn worker processes and the same HTTP stack: uvicorn[standard]
(httptools and uvloop) at the version our service runs, named explicitly on every command line.
"""

import json
import subprocess
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
import yaml

from bench.procs import UNLIMITED, Server
from gis.layers import LayerRegistry, LayerSpec

WORKERS = 2
CRS84 = "http://www.opengis.net/def/crs/OGC/1.3/CRS84"
EPSG4490 = "http://www.opengis.net/def/crs/EPSG/0/4490"


@dataclass(frozen=True)
class PeerPackages:
    name: str
    packages: tuple[str, ...]


# Pinned, so that a result names exactly what was measured; `pip freeze` of each venv goes in the results.
UVICORN = "uvicorn[standard]==0.55.0"  # what `make` installs for our service (pyproject: uvicorn[standard])
HTTP_STACK = ("--http", "httptools", "--loop", "uvloop")  # the same for every server, never left to detection
TIPG = PeerPackages("tipg", ("tipg==1.6.1", UVICORN))
PYGEOAPI = PeerPackages("pygeoapi", (
    "pygeoapi==0.24.0", "SQLAlchemy==2.1.9", "GeoAlchemy2==0.20.0", "psycopg2-binary==2.9.13",
    "starlette==1.10.0", UVICORN,
))


def base_python() -> str:
    """The interpreter the project's .venv was made from (the one the Makefile found)."""
    candidate = Path(sys.base_prefix) / "bin" / f"python{sys.version_info.major}.{sys.version_info.minor}"
    return str(candidate) if candidate.exists() else getattr(sys, "_base_executable", sys.executable)


def ensure_venv(peers_dir: Path, peer: PeerPackages, say: Callable[[str], None] = print) -> Path:
    """bench/.peers/<name>, created and filled once per pinned package list."""
    venv = peers_dir / peer.name
    marker = venv / ".bench-packages"
    wanted = "\n".join(peer.packages) + "\n"
    if marker.is_file() and marker.read_text() == wanted and (venv / "bin" / "python").exists():
        return venv
    say(f"creating {venv} ({', '.join(peer.packages)})")
    subprocess.run([base_python(), "-m", "venv", "--clear", str(venv)], check=True)
    pip = str(venv / "bin" / "pip")
    subprocess.run([pip, "install", "-qq", "--upgrade", "pip"], check=True)
    subprocess.run([pip, "install", "-qq", *peer.packages], check=True)
    marker.write_text(wanted)
    return venv


def freeze(venv: Path) -> list[str]:
    out = subprocess.run([str(venv / "bin" / "pip"), "freeze"], capture_output=True, text=True, check=False)
    return out.stdout.split()


# What each server's answer depends on, named with its version in the report: the HTTP stack, then its own.
STACK = ("uvicorn", "httptools", "uvloop", "starlette")
OWN = {"ours": ("fastapi", "psycopg"), "tipg": ("tipg", "fastapi", "asyncpg"),
       "pygeoapi": ("pygeoapi", "sqlalchemy", "psycopg2-binary")}


def versions(frozen: list[str], names: tuple[str, ...]) -> dict[str, str]:
    """name -> version for the names asked (pip freeze lines `name==version`; names compared as PyPI does)."""
    def normal(name: str) -> str:
        return name.lower().replace("_", "-")

    pinned = dict(normal(line).split("==", 1) for line in frozen if "==" in line)
    return {name: pinned.get(normal(name), "not installed") for name in names}


@dataclass
class Endpoint:
    """How one server spells the benchmark's requests."""

    name: str
    server: Server
    collection: str  # the pipelines collection's id on this server
    tile_order: str  # "zyx" (OGC) or "zxy" (tipg's route)
    item_suffix: str = ""  # query string every request needs (pygeoapi's f=json)
    tile_suffix: str = ""
    cases: frozenset[str] | None = None  # only these cases (None: all)
    bbox_crs: str | None = None  # sent as bbox-crs with the (lon/lat) bbox
    headers: dict[str, str] = field(default_factory=dict)  # sent with every request (credentials)


def _extent(conn: psycopg.Connection, spec: LayerSpec, fallback: tuple[float, ...]) -> list[float]:
    row = conn.execute("SELECT extent FROM ops.layer_stats WHERE layer_id = %s", (spec.id,)).fetchone()
    return [float(v) for v in row[0]] if row and row[0] else list(fallback)


def pygeoapi_config(registry: LayerRegistry, url: str, port: int, fallback_extent: tuple[float, ...]) -> dict:
    """pygeoapi's configuration: one collection per registry layer, Features and MVT from PostgreSQL."""
    parts = psycopg.conninfo.conninfo_to_dict(url)
    resources: dict[str, object] = {}
    with psycopg.connect(url) as conn:
        for spec in registry.values():
            data = {"host": parts.get("host", "127.0.0.1"), "port": int(parts.get("port", 5432)),
                    "dbname": parts["dbname"], "user": parts.get("user", "postgres"),
                    "password": parts.get("password", ""), "search_path": [spec.domain.value, "public"]}
            common = {"data": data, "id_field": "fid", "table": spec.id, "geom_field": "geom",
                      "storage_crs": EPSG4490, "always_xy": True}
            resources[spec.id] = {
                "type": "collection",
                "title": spec.title.en,
                "description": spec.description,
                "keywords": list(spec.keywords) or [spec.id],
                "extents": {"spatial": {"bbox": _extent(conn, spec, fallback_extent), "crs": CRS84}},
                "providers": [
                    {"type": "feature", "name": "PostgreSQL", **common, "crs": [CRS84, EPSG4490]},
                    {"type": "tile", "name": "MVT-postgresql", **common,
                     "options": {"zoom": {"min": 0, "max": 22}},
                     "format": {"name": "pbf", "mimetype": "application/vnd.mapbox-vector-tile"}},
                ],
            }
    return {
        "server": {
            "bind": {"host": "127.0.0.1", "port": port},
            "url": f"http://127.0.0.1:{port}",
            "mimetype": "application/json; charset=UTF-8",
            "encoding": "utf-8",
            "languages": ["en-US"],
            "limits": {"default_items": 10, "max_items": 10000},
            "map": {"url": "https://tile.openstreetmap.org/{z}/{x}/{y}.png", "attribution": "OpenStreetMap"},
        },
        "logging": {"level": "ERROR"},
        "metadata": {
            "identification": {"title": "gis bench: pygeoapi", "description": "benchmark peer",
                               "keywords": ["bench"], "keywords_type": "theme", "terms_of_service": "none",
                               "url": "http://127.0.0.1"},
            "license": {"name": "none", "url": "http://127.0.0.1"},
            "provider": {"name": "bench", "url": "http://127.0.0.1"},
            "contact": {"name": "bench"},
        },
        "resources": resources,
    }


def pygeoapi_server(venv: Path, work: Path, registry: LayerRegistry, url: str, port: int,
                    fallback_extent: tuple[float, ...], env: Mapping[str, str]) -> Server:
    work.mkdir(parents=True, exist_ok=True)
    config = work / "pygeoapi-config.yml"
    openapi = work / "pygeoapi-openapi.yml"
    config.write_text(yaml.safe_dump(pygeoapi_config(registry, url, port, fallback_extent), allow_unicode=True))
    cli = str(venv / "bin" / "pygeoapi")
    subprocess.run([cli, "config", "validate", "-c", str(config)], check=True, capture_output=True, env=dict(env))
    subprocess.run([cli, "openapi", "generate", str(config), "--output-file", str(openapi)],
                   check=True, capture_output=True, env=dict(env))
    server_env = dict(env) | {"PYGEOAPI_CONFIG": str(config), "PYGEOAPI_OPENAPI": str(openapi)}
    args = [str(venv / "bin" / "uvicorn"), "pygeoapi.starlette_app:APP", "--host", "127.0.0.1", "--port", str(port),
            "--workers", str(WORKERS), *HTTP_STACK, "--log-level", "warning", "--no-access-log"]
    return Server("pygeoapi", args, port, server_env, work / "pygeoapi.log", cwd=work)


def tipg_server(venv: Path, work: Path, registry: LayerRegistry, url: str, port: int,
                env: Mapping[str, str]) -> Server:
    work.mkdir(parents=True, exist_ok=True)
    schemas = sorted({spec.domain.value for spec in registry.values()})
    tables = [f"{spec.domain.value}.{spec.id}" for spec in registry.values()]
    server_env = dict(env) | {
        "DATABASE_URL": url,
        "TIPG_DB_SCHEMAS": json.dumps(schemas),
        "TIPG_DB_TABLES": json.dumps(tables),
        "TIPG_MAX_FEATURES_PER_QUERY": "10000",
    }
    args = [str(venv / "bin" / "uvicorn"), "tipg.main:app", "--host", "127.0.0.1", "--port", str(port),
            "--workers", str(WORKERS), *HTTP_STACK, "--log-level", "warning", "--no-access-log"]
    return Server("tipg", args, port, server_env, work / "tipg.log", cwd=work)


def our_server(root: Path, work: Path, url: str, port: int, env: Mapping[str, str],
               tile_cache: bool = True) -> Server:
    work.mkdir(parents=True, exist_ok=True)
    server_env = dict(env) | UNLIMITED | {"GIS_DATABASE_URL": url}
    name = "ours"
    if not tile_cache:
        server_env["GIS_TILE_CACHE_MIB"] = "0"
        name = "ours-nocache"
    args = [str(root / ".venv" / "bin" / "gis"), "serve", "--workers", str(WORKERS), "--port", str(port)]
    return Server(name, args, port, server_env, work / f"{name}.log", cwd=root)


def bench_api_key(root: Path, url: str, env: Mapping[str, str], role: str = "pipeline_app") -> dict[str, str]:
    """Credentials for our service: a key of a role that reads the pipelines (an internal layer), made with
    `gis keys create` on the bench database. Nothing if this checkout has no keys yet."""
    out = subprocess.run([str(root / ".venv" / "bin" / "gis"), "keys", "create", "--role", role, "--name", "bench"],
                         env=dict(env) | {"GIS_DATABASE_URL": url}, cwd=root, capture_output=True, text=True,
                         check=False)
    lines = out.stdout.strip().splitlines()
    if out.returncode != 0 or len(lines) < 2:
        return {}
    return {"X-API-Key": lines[-1].strip()}
