"""Who is calling: request -> credential -> caller and role (services/auth/visibility.py: what that role may read).

Credentials, in this order: `X-API-Key` header; `Authorization: Basic` (the key as password, any user
name, or the key as user name with no password: QGIS's authcfg); `Authorization: Bearer` (an OIDC JWT
checked against the configured JWKS); the `api_key` query parameter (QGIS 3.22 cannot send headers).
No credential: the anonymous role, with no SQL at all. A credential that does not check out: 401.

Key lookups are cached per process for GIS_AUTH_KEY_CACHE_SECONDS (a revoked key stops working
within that time, at most 5 s, on every node).
"""

import asyncio
import base64
import binascii
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jwt
from fastapi import HTTPException, Request

from gis.db.pool import GuardedPool
from gis.security import keys
from gis.security.policy import Policy, Role
from gis.security.settings import AuthSettings
from services.common.state import app_state

CHALLENGE = {"WWW-Authenticate": 'Basic realm="gis", charset="UTF-8", Bearer'}
API_KEY_HEADER = "x-api-key"
CREDENTIAL_PARAMETER = "api_key"
_CACHE_MAX = 10_000


@dataclass(frozen=True)
class Caller:
    subject: str
    role: Role
    method: str  # anonymous, api-key, basic, bearer
    key_id: str | None = None
    claims: Mapping[str, Any] = field(default_factory=dict)

    @property
    def anonymous(self) -> bool:
        return self.method == "anonymous"


class Auth:
    """Per app: the policy, the settings, the key cache and the token verifier."""

    def __init__(self, settings: AuthSettings, policy: Policy) -> None:
        self.settings = settings
        self.policy = policy
        self.anonymous = Caller("anonymous", policy.anonymous, "anonymous")
        self._keys: dict[str, tuple[float, keys.KeyRecord | None]] = {}
        self._lookups: dict[str, asyncio.Future[keys.KeyRecord | None]] = {}  # lookups under way, by key
        self._jwks: jwt.PyJWKClient | jwt.PyJWKSet | None = None
        if settings.jwks:
            if settings.jwks.startswith(("https://", "http://")):
                self._jwks = jwt.PyJWKClient(settings.jwks, cache_keys=True, lifespan=300)
            else:
                self._jwks = jwt.PyJWKSet.from_json(Path(settings.jwks).read_text(encoding="utf-8"))

    # -- API keys ---------------------------------------------------------------------------------
    async def key_caller(self, pool: GuardedPool, token: str, method: str) -> Caller:
        record = await self._key_record(pool, token)
        if record is None:
            raise unauthorized("the API key is not valid")
        role = self.policy.role(record.role)
        if role is None:
            raise unauthorized("the API key's role is not in the access policy")
        return Caller(f"key:{record.key_id}:{record.name}", role, method, record.key_id, record.claims)

    async def _key_record(self, pool: GuardedPool, token: str) -> keys.KeyRecord | None:
        """The key's record from this process's cache, else looked up once however many requests ask at once: when
        a busy key's cache entry expires, every request then in flight would otherwise take a pooled connection for
        the same lookup at the same moment (a burst of 30 per process at 64 connections)."""
        cached = self._keys.get(token)
        if cached is not None and cached[0] > time.monotonic():
            return cached[1]
        if keys.key_id_of(token) is None:  # not even the shape of a key: no SQL
            return None
        pending = self._lookups.get(token)
        if pending is None:
            pending = asyncio.ensure_future(self._look_up(pool, token))
            self._lookups[token] = pending
            pending.add_done_callback(lambda _done: self._lookups.pop(token, None))
        # shielded: a caller that goes away (its client hung up) does not cancel the others' lookup
        return await asyncio.shield(pending)

    async def _look_up(self, pool: GuardedPool, token: str) -> keys.KeyRecord | None:
        asked = time.monotonic()  # trusted from when it was asked, so a revocation shows within the period
        async with pool.connection() as conn:
            record = await keys.lookup(conn, token, self.settings.pepper.get_secret_value())
        if len(self._keys) >= _CACHE_MAX:
            self._keys.clear()
        self._keys[token] = (asked + self.settings.key_cache_seconds, record)
        return record

    # -- bearer tokens ----------------------------------------------------------------------------
    def token_caller(self, token: str) -> Caller:
        if self._jwks is None:
            raise unauthorized("bearer tokens are not accepted here")
        try:
            header = jwt.get_unverified_header(token)
            if isinstance(self._jwks, jwt.PyJWKClient):
                key = self._jwks.get_signing_key_from_jwt(token)
            else:
                key = self._jwks[header.get("kid", "")] if header.get("kid") else self._jwks.keys[0]
            claims = jwt.decode(
                token, key, algorithms=["RS256", "RS384", "RS512", "ES256", "ES384", "PS256"],
                audience=self.settings.jwt_audience, issuer=self.settings.jwt_issuer,
                options={"require": ["exp", "sub"], "verify_aud": self.settings.jwt_audience is not None},
            )
        except (jwt.PyJWTError, KeyError, IndexError) as exc:
            raise unauthorized(f"the bearer token is not valid: {str(exc)[:120]}") from None
        role = self.policy.role(str(claims.get(self.settings.jwt_role_claim, "")))
        if role is None:
            raise unauthorized("the bearer token names no role of the access policy")
        return Caller(f"sub:{claims['sub']}", role, "bearer", None, claims)



def unauthorized(message: str) -> HTTPException:
    return HTTPException(401, message, headers=CHALLENGE)


def auth_of(request: Request) -> Auth:
    return app_state(request).auth


def _basic(value: str) -> str:
    try:
        decoded = base64.b64decode(value, validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        raise unauthorized("the Basic credentials are not valid base64 of user:password") from None
    user, _, password = decoded.partition(":")
    token = password or user
    if not token:
        raise unauthorized("the Basic credentials are empty")
    return token


async def authenticate(request: Request) -> Caller:
    """The dependency every route has (installed on the app): who is calling; 401 for a bad credential."""
    state = app_state(request)
    auth = state.auth
    header_key = request.headers.get(API_KEY_HEADER)
    authorization = request.headers.get("authorization")
    query_key = request.query_params.get(CREDENTIAL_PARAMETER)
    if header_key:
        caller = await auth.key_caller(state.pool, header_key.strip(), "api-key")
    elif authorization:
        scheme, _, value = authorization.strip().partition(" ")
        if scheme.lower() == "basic":
            caller = await auth.key_caller(state.pool, _basic(value.strip()), "basic")
        elif scheme.lower() == "bearer":
            caller = auth.token_caller(value.strip())
        else:
            raise unauthorized(f"the {scheme[:20]} authorization scheme is not accepted; use Basic or Bearer")
    elif query_key:
        caller = await auth.key_caller(state.pool, query_key.strip(), "api-key")
    else:
        caller = auth.anonymous
    request.state.caller = caller
    return caller


def caller_of(request: Request) -> Caller:
    found: Caller | None = getattr(request.state, "caller", None)
    return found if found is not None else auth_of(request).anonymous


def forbidden(message: str) -> HTTPException:
    return HTTPException(403, message)
