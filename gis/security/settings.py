"""Authentication settings, env prefix GIS_AUTH_ (split from gis.settings by concern); built once, passed in."""

from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class AuthSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="GIS_AUTH_", extra="ignore")

    policy_file: Path | None = Field(
        default=None, description="The access policy; default: access-policy.yml at the top of the layers directory.")
    pepper: SecretStr = Field(
        default=SecretStr(""),
        description="Server secret mixed into every API key hash (HMAC-SHA256); a leaked key table alone then "
                    "cannot be checked against candidate keys. Changing it invalidates every key.")
    key_cache_seconds: float = Field(default=30.0, ge=0, description="How long a process trusts a key lookup.")
    jwks: str | None = Field(
        default=None, description="OIDC signing keys for bearer tokens: a JWKS URL (https://...) or a JWKS file.")
    jwt_issuer: str | None = Field(default=None, description="Required `iss` of bearer tokens.")
    jwt_audience: str | None = Field(default=None, description="Required `aud` of bearer tokens.")
    jwt_role_claim: str = Field(default="role", description="The claim naming the caller's policy role.")
