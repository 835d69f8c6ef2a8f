"""The entry point uvicorn's workers call: settings from the environment, read once per worker."""

import gc

from fastapi import FastAPI

from gis.jobs.settings import JobSettings
from gis.security.settings import AuthSettings, HttpSettings
from gis.settings import ServeSettings, Settings
from services.app import create_app


def app_from_environment() -> FastAPI:
    app = create_app(Settings(), AuthSettings(), HttpSettings(), ServeSettings(), JobSettings())
    # What was made to start (the app, the registry, pygeoapi, the libraries: about 180,000 objects) lives as long
    # as the worker: frozen, the collector's full passes no longer walk it. Under load (items limit=100, 64
    # connections, a busy machine) a worker made 2-3 full passes in 16 s, each 0.5-0.9 s with every request then in
    # flight on it waiting (p99 0.96-1.2 s); frozen, 4-5 passes of 8-31 ms (p99 0.44-0.51 s), and 13-20% less CPU
    # per request.
    gc.collect()
    gc.freeze()
    # A young-generation pass every 10,000 allocations of container objects rather than 700: with many requests
    # in flight their objects are young and alive, and each pass walked and promoted them (items limit=100, CPU of
    # the collector's passes from gc.callbacks: 4-7% of a worker's CPU at 8 and 64 connections; 0.1% now).
    gc.set_threshold(10_000, 10, 10)
    return app
