"""`gis worker`: a process that runs queued jobs (gis/jobs/) through the same processes the service offers.

It builds what a service process builds for its processes (registry, policy, rules, the bridge), runs a
Worker in the foreground and stops on SIGTERM or SIGINT, letting the jobs it runs finish for up to
GIS_JOBS_STALE_SECONDS (past that, another worker resumes them anyway).
"""

import logging
import os
import signal
import threading
from types import FrameType

from gis.jobs.settings import JobSettings
from gis.jobs.worker import Heartbeat, Worker
from gis.project import load_project
from gis.security.settings import AuthSettings
from gis.settings import Settings
from gis.tiles_keeper import CopyKeeper
from services.processes import make_bridge

LOGGER = logging.getLogger("gis.worker")


def run_worker(settings: Settings, jobs: JobSettings, auth: AuthSettings, ready: threading.Event | None = None) -> int:
    # Every connection of this process (the pool's, and those a process opens itself) asks its server to check
    # for the client every 2 s while a statement runs: when this worker is killed, its statements stop too,
    # instead of running on and racing the run that resumes the job.
    os.environ["PGOPTIONS"] = f"{os.environ.get('PGOPTIONS', '')} -c client_connection_check_interval=2000".strip()
    bridge = make_bridge(settings, load_project(settings, auth.policy_file), application_name="gis-worker")
    context = bridge.context
    context.pool.open(wait=False)  # a worker starts without a database and waits for it, as the service does
    heartbeat = Heartbeat(context.pool, jobs)
    context.heartbeat = heartbeat
    worker = Worker(context.pool, jobs, bridge.manager().run_claimed, heartbeat)

    def stop(signum: int, _frame: FrameType | None) -> None:
        LOGGER.warning("worker %s stopping (signal %d)", heartbeat.runner, signum)
        worker.request_stop()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    keeper = CopyKeeper(context.database_url, context.registry, settings.tile_copy_interval_s, settings.styles_dir)
    keeper.start()
    LOGGER.warning("worker %s running queued jobs (%d at once)", heartbeat.runner, jobs.concurrency)
    if ready is not None:
        ready.set()
    try:
        worker.run()
    finally:
        keeper.stop()
        worker.stop()
        context.pool.close()
    return 0
