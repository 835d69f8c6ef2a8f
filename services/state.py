"""What every router needs, built once by create_app and reached through a dependency."""

from dataclasses import dataclass

from fastapi import Request
from psycopg_pool import AsyncConnectionPool

from gis.layers import LayerRegistry
from gis.settings import Settings


@dataclass(frozen=True)
class AppState:
    settings: Settings
    registry: LayerRegistry
    pool: AsyncConnectionPool


def app_state(request: Request) -> AppState:
    state: AppState = request.app.state.gis
    return state
