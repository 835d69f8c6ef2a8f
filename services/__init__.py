"""The web service: OGC API Features and Tiles natively, the rest through pygeoapi; see create_app."""

from services.app import create_app

__all__ = ["create_app"]
