"""A database cluster of a test module's own (one it may stop, freeze and start), with one layer loaded."""

import contextlib
import shutil
from collections.abc import Iterator
from pathlib import Path

import psycopg
from local_ports import free_port

from gis.db.cluster import Cluster
from gis.db.migrate import migrate
from gis.layers import LayerRegistry
from gis.refresh.runner import RefreshRequest, run_refresh
from gis.settings import Settings


@contextlib.contextmanager
def own_cluster(home: Path, registry: LayerRegistry, settings: Settings, layer: str) -> Iterator[Cluster]:
    """A new cluster under `home` (migrated, `layer` refreshed from the samples), stopped and removed afterwards."""
    shutil.rmtree(home, ignore_errors=True)
    own = Settings(cluster_dir=home / "pg", cluster_port=free_port(), samples_dir=settings.samples_dir,
                   rejects_dir=settings.rejects_dir)
    cluster = Cluster(own)
    cluster.start()
    try:
        with psycopg.connect(cluster.url()) as conn:
            migrate(conn, registry)
        spec = registry.get_layer(layer)
        run_refresh(cluster.url(), RefreshRequest(spec, own.samples_dir / spec.source.path, own.city_extent,
                                                  own.rejects_dir, progress=False))
        yield cluster
    finally:
        cluster.stop()
        shutil.rmtree(home, ignore_errors=True)
