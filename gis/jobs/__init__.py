"""Asynchronous jobs as a queue in PostgreSQL (ops.jobs): claimed by `gis worker` processes, kept alive by
heartbeats, resumed or failed when whoever ran them is gone. Nothing here knows what a job computes: the
service supplies the function that runs one (services/processes/job_runner.py)."""
