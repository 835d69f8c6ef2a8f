"""What a delivery leaves in ops.refresh_log names the delivery (its number and file name), never the scratch
directory it was unpacked into; and `gis refresh --watch` unpacks into GIS_TEMP_DIR like the service does."""

import os
from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest

from gis.deliveries import store
from gis.layers import LayerRegistry
from gis.settings import Settings

SENDER = store.Sender("sources-test", "pipeline_office", "api")


def _deliver(url: str, settings: Settings, registry: LayerRegistry, name: str, content: bytes,
             scratch: Path) -> tuple[int, dict[str, object]]:
    spec = registry["pipe_nodes"]
    with psycopg.connect(url) as conn:
        received = store.receive(conn, spec, SENDER, name, content, None, None)
    return received.delivery_id, store.run_delivery(url, spec, received.delivery_id, settings.city_extent,
                                                    settings.rejects_dir, scratch)


def _logged(url: str) -> list[tuple[str, str, str | None]]:
    with psycopg.connect(url) as conn:
        return conn.execute("SELECT status, source_path, message FROM ops.refresh_log WHERE layer_id = 'pipe_nodes' "
                            "ORDER BY started_at DESC, refresh_id DESC LIMIT 1").fetchall()


def test_the_refresh_log_names_the_delivery_not_its_scratch_path(
        clone_db: Callable[[], str], settings: Settings, registry: LayerRegistry, tmp_path: Path) -> None:
    url = clone_db()
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    content = (settings.samples_dir / registry["pipe_nodes"].source.path).read_bytes()
    good, result = _deliver(url, settings, registry, "管点 2026-12.gpkg", content, scratch)
    assert result["status"] == "succeeded"
    succeeded = _logged(url)
    # A damaged GeoPackage: the reader's message quotes the file it opened.
    bad, failure = _deliver(url, settings, registry, "nodes-damaged.gpkg", content[:200_000], scratch)
    assert failure["status"] == "failed"
    failed = _logged(url)
    assert succeeded == [("succeeded", f"delivery {good}: 管点 2026-12.gpkg", None)]
    assert failed[0][:2] == ("failed", f"delivery {bad}: nodes-damaged.gpkg")
    message = failed[0][2]
    assert message and str(scratch) not in message and "gis-delivery-" not in message
    assert f"delivery {bad}: nodes-damaged.gpkg" in message  # the reader's complaint names the delivery
    assert not list(scratch.iterdir())  # nothing left behind


def test_the_watched_folder_unpacks_into_the_temp_dir_setting(
        clone_db: Callable[[], str], settings: Settings, registry: LayerRegistry, tmp_path: Path) -> None:
    from gis.cli import main

    url = clone_db()
    inbox = tmp_path / "inbox"
    (inbox / "pipe_nodes").mkdir(parents=True)
    dropped = inbox / "pipe_nodes" / "nodes.gpkg"
    dropped.write_bytes((settings.samples_dir / registry["pipe_nodes"].source.path).read_bytes())
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    os.utime(scratch, ns=(10**18, 10**18))  # 2001: a directory made in it and removed again moves this to now
    with pytest.MonkeyPatch.context() as patch:
        for name, value in {"GIS_DATABASE_URL": url, "GIS_LAYERS_DIR": str(settings.layers_dir),
                            "GIS_STYLES_DIR": str(settings.styles_dir), "GIS_TEMP_DIR": str(scratch),
                            "GIS_REJECTS_DIR": str(tmp_path / "rejects")}.items():
            patch.setenv(name, value)
        assert main(["refresh", "--watch", str(inbox), "--once"]) == 0
    assert (inbox / "pipe_nodes" / "done" / "nodes.gpkg").is_file()
    assert scratch.stat().st_mtime_ns > 10**18  # the delivery was unpacked in a directory of its own there
    assert not list(scratch.iterdir())  # and it was removed


def test_scratch_paths_logged_before_are_renamed_by_the_migration(
        clone_db: Callable[[], str], settings: Settings, registry: LayerRegistry, tmp_path: Path) -> None:
    from gis.db.migrate import migration_files

    url = clone_db()
    content = (settings.samples_dir / registry["pipe_nodes"].source.path).read_bytes()
    good, _ = _deliver(url, settings, registry, "nodes.gpkg", content, tmp_path)
    scratch = "/var/tmp/gis-delivery-k2j_x9/delivery.gpkg"
    with psycopg.connect(url) as conn:  # as the refresh logged them before
        conn.execute("UPDATE ops.refresh_log SET source_path = %s WHERE refresh_id = "
                     "(SELECT refresh_id FROM ops.deliveries WHERE delivery_id = %s)", (scratch, good))
        conn.execute("INSERT INTO ops.refresh_log (layer_id, status, started_at, source_path, message) VALUES "
                     "('pipe_nodes', 'failed', now(), %s, %s)",
                     (scratch, f"'{scratch}' not recognized as being in a supported file format"))
        (text,) = [sql for version, _, sql in migration_files() if version == 32]
        conn.execute(text.encode())
        rows = conn.execute("SELECT source_path, message FROM ops.refresh_log WHERE layer_id = 'pipe_nodes' "
                            "ORDER BY refresh_id DESC LIMIT 2").fetchall()
    assert rows[1] == (f"delivery {good}: nodes.gpkg", None)
    assert rows[0] == ("a delivery: delivery.gpkg", "'a delivery: delivery.gpkg' not recognized as being in a "
                                                    "supported file format")
