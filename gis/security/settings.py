"""Security settings (split from gis.settings by concern), built once and passed in: authentication (GIS_AUTH_)
and the HTTP service's hardening (GIS_HTTP_)."""

from pathlib import Path
from typing import Annotated

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


class AuthSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="GIS_AUTH_", extra="ignore")

    policy_file: Path | None = Field(
        default=None, description="The access policy; default: access-policy.yml at the top of the layers directory.")
    pepper: SecretStr = Field(
        default=SecretStr(""),
        description="Server secret mixed into every API key hash (HMAC-SHA256); a leaked key table alone then "
                    "cannot be checked against candidate keys. Changing it invalidates every key.")
    key_cache_seconds: float = Field(
        default=4.0, ge=0, le=5,
        description="How long a process trusts a key lookup: a revoked key stops working on every node within "
                    "this time (at most 5 s). A lookup is one indexed read per key, process and period.")
    jwks: str | None = Field(
        default=None, description="OIDC signing keys for bearer tokens: a JWKS URL (https://...) or a JWKS file.")
    jwt_issuer: str | None = Field(default=None, description="Required `iss` of bearer tokens.")
    jwt_audience: str | None = Field(default=None, description="Required `aud` of bearer tokens.")
    jwt_role_claim: str = Field(default="role", description="The claim naming the caller's policy role.")


class HttpSettings(BaseSettings):
    """Hardening of the HTTP service, env prefix GIS_HTTP_: rate limits, caps, statement time, CORS."""

    model_config = SettingsConfigDict(env_prefix="GIS_HTTP_", extra="ignore")

    rate_per_second: float = Field(
        default=50.0, ge=0,
        description="Requests per second each API key (or each client address, for anonymous callers) may make, "
                    "sustained, across every service node and worker (a budget on the primary); 0 turns rate "
                    "limiting off.")
    rate_burst: int = Field(
        default=300, ge=1,
        description="Requests a caller may make at once before the sustained rate applies (a web map asks for "
                    "dozens of tiles per view).")
    continuation_cost: float = Field(
        default=0.1, ge=0, le=1,
        description="What a page reached through a `next` link (a keyset cursor) costs, in requests: clients "
                    "page through a layer as fast as it answers, and a continuation is an index seek.")
    max_body_bytes: int = Field(
        default=2**20, ge=0, description="Largest request body (bytes) anywhere but the upload endpoints.")
    max_upload_bytes: int = Field(
        default=28 * 2**20, ge=0,
        description="Largest request body (bytes) of the upload endpoints (overlap-check proposals, process "
                    "execution): a 20 MiB file, base64-encoded in JSON, and the rest of the request.")
    statement_timeout_ms: int = Field(
        default=30_000, ge=0,
        description="PostgreSQL statement_timeout of the API's connections; a query running longer is cancelled "
                    "and the client gets a 503. 0: no limit.")
    cql2_max_nodes: int = Field(default=2000, ge=1, description="Most predicates and values in one CQL2 filter.")
    cql2_max_depth: int = Field(default=30, ge=1, description="Deepest nesting of one CQL2 filter.")
    cql2_max_coordinates: int = Field(
        default=20_000, ge=1, description="Most coordinates in the geometries of one CQL2 filter.")
    cors_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Origins (scheme://host[:port]) whose web pages may call the API from a browser, comma-separated; "
                    "'*' for any. Default: none (no CORS headers).")

    @field_validator("cors_origins", mode="before")
    @classmethod
    def _split_origins(cls, value: object) -> object:
        if isinstance(value, str):
            return [origin.strip().rstrip("/") for origin in value.split(",") if origin.strip()]
        return value
