"""The entry point uvicorn's workers call: settings from the environment, read once per worker."""

from fastapi import FastAPI

from gis.jobs.settings import JobSettings
from gis.security.settings import AuthSettings, HttpSettings
from gis.settings import ServeSettings, Settings
from services.app import create_app


def app_from_environment() -> FastAPI:
    return create_app(Settings(), AuthSettings(), HttpSettings(), ServeSettings(), JobSettings())
