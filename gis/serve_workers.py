"""`gis serve --workers N`: uvicorn's own supervisor, plus the upkeep of Prometheus' multiprocess files.

In multiprocess mode each worker writes its metrics to files named by its pid in PROMETHEUS_MULTIPROC_DIR, and
/metrics sums them all. A worker that died (killed, crashed, replaced) leaves its files behind: its live gauges
(pool connections, breaker state, standby lag) would be counted forever. So the supervisor calls
prometheus_client's mark_process_dead for each worker it replaces or retires, and a new `gis serve` clears the
files a previous run left (the directory must start empty, as prometheus_client's documentation says).
Counters and histograms of a dead worker stay (mark_process_dead keeps them): totals never go backwards.
"""

import logging
from pathlib import Path

from prometheus_client import multiprocess
from uvicorn import Config
from uvicorn.supervisors import Multiprocess

LOGGER = logging.getLogger("gis.serve")


def clear_stale_files(directory: str) -> int:
    """Remove the metric files a previous run left in `directory`; returns how many."""
    removed = 0
    for path in Path(directory).glob("*.db"):
        path.unlink(missing_ok=True)
        removed += 1
    return removed


class Supervisor(Multiprocess):
    """uvicorn's Multiprocess (a dead worker is replaced and logged), forgetting each dead worker's live metrics."""

    def __init__(self, config: Config, metrics_dir: str | None) -> None:
        super().__init__(config, sockets=[config.bind_socket()])
        self.metrics_dir = metrics_dir

    def _pids(self) -> set[int]:
        return {p.pid for p in self.processes if p.pid is not None}

    def _forget(self, pids: set[int]) -> None:
        if self.metrics_dir is None:
            return
        for pid in pids:
            multiprocess.mark_process_dead(pid, self.metrics_dir)
            LOGGER.info("worker %s gone: its live metrics removed", pid)

    def keep_subprocess_alive(self) -> None:
        before = self._pids()
        super().keep_subprocess_alive()
        self._forget(before - self._pids())

    def restart_all(self) -> None:
        before = self._pids()
        super().restart_all()
        self._forget(before - self._pids())


def run(config: Config, metrics_dir: str | None) -> None:
    """Serve with config.workers processes until stopped (SIGINT/SIGTERM)."""
    Supervisor(config, metrics_dir).run()
