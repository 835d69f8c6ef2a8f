"""Keeps the layers' generalised tile copies (gis.tiles_generalised) caught up, in the background of a worker.

A refresh does not build the copy itself: for the bench layer a first build costs several times the load, and
an operator's `gis refresh` (or a department's delivery) should end when the layer has changed, not when its
tiles have been redrawn. Until its copy has caught up, a layer's tiles take the general path (same features,
more database time: tiles.tile_statement checks the copy's version in the same statement), so a copy behind
is slower, never wrong.

Every `gis worker`, and every service process that runs queued jobs, runs one keeper. Several keepers agree
through the database alone: a layer is caught up by whichever holds its advisory lock, the others skip it.
"""

import logging
import threading
from pathlib import Path

import psycopg

from gis import tiles, tiles_generalised
from gis.layers import LayerRegistry

LOGGER = logging.getLogger("gis.tiles")


class CopyKeeper:
    """Every `interval_s`, catches up each layer whose copy is behind it (or carries other fields than the layer's
    style under `styles_dir` draws with)."""

    def __init__(self, url: str, registry: LayerRegistry, interval_s: float, styles_dir: Path) -> None:
        self.url = url
        self.registry = registry
        self.interval_s = interval_s
        self.styles_dir = styles_dir
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self.interval_s <= 0:
            return  # turned off (GIS_TILE_COPY_INTERVAL_S=0): `gis tiles` catches up by hand
        self._thread = threading.Thread(target=self._run, name="tile-copies", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)  # a catch-up under way ends with the process; its transaction rolls back

    def run_once(self) -> list[str]:
        """Catch up the copies behind their layers; the layers this process caught up."""
        caught: list[str] = []
        for layer_id in tiles_generalised.stale_layers(self.url, self.registry, self.styles_dir):
            spec = self.registry.get(layer_id)
            if spec is None:
                continue  # a layer another checkout declares: not ours to build
            drawn = tiles.drawn_fields(spec, self.styles_dir)
            if tiles_generalised.catch_up(self.url, spec, drawn, wait=False) is not None:
                caught.append(layer_id)
        return caught

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                caught = self.run_once()
            except psycopg.Error as exc:  # the database is away: the next round tries again
                LOGGER.warning("tile copies not caught up: %s", str(exc).splitlines()[0] if str(exc) else exc)
                continue
            if caught:
                LOGGER.info("tile copies caught up: %s", ", ".join(caught))
