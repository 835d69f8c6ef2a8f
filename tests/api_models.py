"""Small models of the OGC API documents, to validate response bodies in the API tests."""

from typing import Annotated, Any, Literal

import httpx
from pydantic import BaseModel, ConfigDict, Field


class Link(BaseModel):
    href: str
    rel: str
    type: str
    title: str | None = None


class OgcException(BaseModel):
    model_config = ConfigDict(extra="forbid")
    code: str
    description: str
    parameter: str | None = None


class Geometry(BaseModel):
    type: Literal["Point", "LineString", "Polygon", "MultiPoint", "MultiLineString", "MultiPolygon"]
    coordinates: list[Any]


class Feature(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["Feature"]
    id: str
    geometry: Geometry | None
    properties: dict[str, Any]
    links: list[Link] | None = None


class FeatureCollection(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["FeatureCollection"]
    features: list[Feature]
    numberReturned: int = Field(ge=0)
    numberMatched: int | None = Field(default=None, ge=0)
    timeStamp: str | None = None
    links: list[Link]

    def link(self, rel: str) -> Link | None:
        return next((x for x in self.links if x.rel == rel), None)


class Extent(BaseModel):
    spatial: dict[str, Any]
    temporal: dict[str, Any] | None = None


class Collection(BaseModel):
    id: str
    title: str
    titles: dict[str, str]
    description: str
    keywords: list[str]
    itemType: Literal["feature"]
    crs: list[str]
    storageCrs: str
    extent: Extent
    links: list[Link]


class RasterCollection(BaseModel):
    """A raster layer (docs/rasters.md): a coverage, with no items; its extent empty until a version is loaded."""

    id: str
    title: str
    titles: dict[str, str]
    description: str
    itemType: Literal["coverage"]
    dataType: Literal["coverage"]
    storageCrs: str
    extent: dict[str, Any]
    links: list[Link]


class Collections(BaseModel):
    collections: list[Annotated[Collection | RasterCollection, Field(discriminator="itemType")]]
    links: list[Link]


class Landing(BaseModel):
    title: str
    description: str
    links: list[Link]


class Conformance(BaseModel):
    conformsTo: list[str]


def features(response: httpx.Response) -> FeatureCollection:
    assert response.status_code == 200, response.text[:500]
    assert response.headers["content-type"].startswith("application/geo+json")
    return FeatureCollection.model_validate_json(response.content)


def error(response: httpx.Response, status: int) -> OgcException:
    assert response.status_code == status, response.text[:500]
    assert response.headers["content-type"].startswith("application/json")
    return OgcException.model_validate_json(response.content)
