"""`gis refresh --watch DIR`: files dropped into DIR/<layer>/ are deliveries, picked up as if posted over HTTP.

Each file is taken once it has stopped growing (same size on two looks), kept in ops.deliveries with its
checksum (sender: the watched folder), loaded by the same job, then moved to DIR/<layer>/done/ or failed/
with a `.result.json` beside it. A file of an unknown layer folder is left where it is and reported.
"""

import getpass
import json
import os
import socket
import time
from collections.abc import Callable
from pathlib import Path

import psycopg

from gis.deliveries import store
from gis.errors import GisError
from gis.layers import LayerRegistry
from gis.refresh.validate import Extent

DONE, FAILED = "done", "failed"
_SUFFIXES = (".gpkg", ".zip", ".geojson", ".json", ".csv")


def _candidates(directory: Path, registry: LayerRegistry) -> list[tuple[str, Path]]:
    found = []
    for folder in sorted(p for p in directory.iterdir() if p.is_dir()):
        if folder.name not in registry:
            continue
        found += [(folder.name, f) for f in sorted(folder.iterdir())
                  if f.is_file() and f.suffix.lower() in _SUFFIXES and not f.name.startswith(".")]
    return found


def _settle(path: Path, sizes: dict[Path, int]) -> bool:
    """Whether the file has stopped growing since the last look (a copy still under way is left for later)."""
    size = path.stat().st_size
    stable = sizes.get(path) == size
    sizes[path] = size
    return stable


def _take(url: str, registry: LayerRegistry, layer_id: str, path: Path, city_extent: Extent,
          rejects_dir: Path, scratch_dir: Path | None) -> dict[str, object]:
    spec = registry[layer_id]
    sender = store.Sender(f"watch:{getpass.getuser()}@{socket.gethostname()}:{path.parent}", "watched-folder",
                          "watch")
    try:
        with psycopg.connect(url) as conn:
            received = store.receive(conn, spec, sender, path.name, path.read_bytes(), None, None)
        result = store.run_delivery(url, spec, received.delivery_id, city_extent, rejects_dir, scratch_dir)
        result = {"delivery_id": received.delivery_id, **result}
    except GisError as exc:
        result = {"status": "failed", "message": str(exc)}
    target = path.parent / (DONE if result["status"] == "succeeded" else FAILED)
    target.mkdir(exist_ok=True)
    moved = target / path.name
    os.replace(path, moved)
    moved.with_name(moved.name + ".result.json").write_text(json.dumps(result, ensure_ascii=False, indent=1),
                                                            encoding="utf-8")
    return {"layer": layer_id, "file": str(moved), **result}


def watch(url: str, registry: LayerRegistry, directory: Path, city_extent: Extent, rejects_dir: Path,
          report: Callable[[dict[str, object]], None], once: bool = False, interval_s: float = 5.0,
          scratch_dir: Path | None = None) -> int:
    """Take deliveries as they arrive; with `once`, those present now, then return the number of failures. Each
    is unpacked in a directory of its own under `scratch_dir` (the temp_dir setting; None: the system's)."""
    if not directory.is_dir():
        raise GisError(f"--watch: {directory} is not a directory")
    sizes: dict[Path, int] = {}
    failures = 0
    while True:
        waiting = False
        for layer_id, path in _candidates(directory, registry):
            if not once and not _settle(path, sizes):
                waiting = True
                continue
            outcome = _take(url, registry, layer_id, path, city_extent, rejects_dir, scratch_dir)
            failures += outcome["status"] != "succeeded"
            report(outcome)
        if once and not waiting:
            return failures
        time.sleep(interval_s)
