"""The one auth dependency: request -> caller -> role -> the layers, fields and rows it may read.

Credentials, in this order: `X-API-Key` header; `Authorization: Basic` (the key as password, any user
name, or the key as user name with no password: QGIS's authcfg); `Authorization: Bearer` (an OIDC JWT
checked against the configured JWKS); the `api_key` query parameter (QGIS 3.22 cannot send headers).
No credential: the anonymous role, with no SQL at all. A credential that does not check out: 401.
A layer the caller may not read answers exactly as a layer that does not exist (404).

Key lookups are cached per process for GIS_AUTH_KEY_CACHE_SECONDS (a revoked key stops working
within that time, at most 5 s, on every node). Reads of internal and restricted layers write one ops.audit_log row each.
"""

import base64
import binascii
import hashlib
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Annotated, Any

import jwt
import orjson
import psycopg
from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from gis.db.cluster import database_url
from gis.errors import NotFound
from gis.features import crs as crs_
from gis.features.cql2 import Filter
from gis.features.params import ItemsQuery
from gis.layers import AccessClass, LayerRegistry, RasterSpec
from gis.security import audit, db_read_audit, keys, rows
from gis.security.policy import LayerView, Policy, Role, load_policy, policy_path, readable
from gis.security.settings import AuthSettings
from services.state import AppState, app_state

LOGGER = logging.getLogger(__name__)

CHALLENGE = {"WWW-Authenticate": 'Basic realm="gis", charset="UTF-8", Bearer'}
API_KEY_HEADER = "x-api-key"
CREDENTIAL_PARAMETER = "api_key"
_CACHE_MAX = 10_000
_AREA_SECONDS = 60.0


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
        self._areas: dict[tuple[str, str, str], tuple[float, Filter]] = {}
        self._jwks: jwt.PyJWKClient | jwt.PyJWKSet | None = None
        if settings.jwks:
            if settings.jwks.startswith(("https://", "http://")):
                self._jwks = jwt.PyJWKClient(settings.jwks, cache_keys=True, lifespan=300)
            else:
                self._jwks = jwt.PyJWKSet.from_json(Path(settings.jwks).read_text(encoding="utf-8"))

    @classmethod
    def load(cls, settings: AuthSettings, layers_dir: Path, registry: LayerRegistry) -> "Auth":
        return cls(settings, load_policy(policy_path(layers_dir, settings.policy_file), registry))

    # -- API keys ---------------------------------------------------------------------------------
    async def key_caller(self, state: AppState, token: str, method: str) -> Caller:
        now = time.monotonic()
        cached = self._keys.get(token)
        if cached is not None and cached[0] > now:
            record = cached[1]
        else:
            record = None
            if keys.key_id_of(token) is not None:  # not even the shape of a key: no SQL
                async with state.pool.connection() as conn:
                    record = await keys.lookup(conn, token, self.settings.pepper.get_secret_value())
            if len(self._keys) >= _CACHE_MAX:
                self._keys.clear()
            self._keys[token] = (now + self.settings.key_cache_seconds, record)
        if record is None:
            raise unauthorized("the API key is not valid")
        role = self.policy.role(record.role)
        if role is None:
            raise unauthorized("the API key's role is not in the access policy")
        return Caller(f"key:{record.key_id}:{record.name}", role, method, record.key_id, record.claims)

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

    # -- row rules --------------------------------------------------------------------------------
    async def row_node(self, state: AppState, caller: Caller, view: LayerView, filter_crs: crs_.Crs) -> Filter:
        rule = view.rows
        assert rule is not None
        value = rows.claim_value(caller.claims, rule)
        if rule.within is None:
            return rows.attribute_node(rule, value)
        if value is None:
            return rows.NOTHING
        key, now = (view.source.id, value, filter_crs.uri), time.monotonic()
        cached = self._areas.get(key)
        if cached is not None and cached[0] > now:
            return cached[1]
        async with state.pool.connection() as conn:
            node = await rows.spatial_node(conn, rule, state.registry, value, filter_crs)
        if len(self._areas) >= _CACHE_MAX:
            self._areas.clear()
        self._areas[key] = (now + _AREA_SECONDS, node)
        return node


def unauthorized(message: str) -> HTTPException:
    return HTTPException(401, message, headers=CHALLENGE)


def auth_of(request: Request) -> Auth:
    found: Auth = request.app.state.auth
    return found


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
    auth = auth_of(request)
    header_key = request.headers.get(API_KEY_HEADER)
    authorization = request.headers.get("authorization")
    query_key = request.query_params.get(CREDENTIAL_PARAMETER)
    if header_key:
        caller = await auth.key_caller(app_state(request), header_key.strip(), "api-key")
    elif authorization:
        scheme, _, value = authorization.strip().partition(" ")
        if scheme.lower() == "basic":
            caller = await auth.key_caller(app_state(request), _basic(value.strip()), "basic")
        elif scheme.lower() == "bearer":
            caller = auth.token_caller(value.strip())
        else:
            raise unauthorized(f"the {scheme[:20]} authorization scheme is not accepted; use Basic or Bearer")
    elif query_key:
        caller = await auth.key_caller(app_state(request), query_key.strip(), "api-key")
    else:
        caller = auth.anonymous
    request.state.caller = caller
    return caller


def caller_of(request: Request) -> Caller:
    found: Caller | None = getattr(request.state, "caller", None)
    return found if found is not None else auth_of(request).anonymous


def layer_view(request: Request, layer_id: str) -> LayerView:
    """The layer as the caller may see it; NotFound (as for a layer that does not exist) if hidden."""
    return caller_of(request).role.view(layer_id)


def visible_layers(request: Request) -> Mapping[str, LayerView]:
    return caller_of(request).role.views


def raster_view(request: Request, raster_id: str) -> RasterSpec:
    """The raster layer if the caller may read it; NotFound (as for a layer that does not exist) if hidden."""
    spec = app_state(request).registry.rasters.get(raster_id)
    if spec is None or not readable(caller_of(request).role.spec, spec):
        raise NotFound(f"no layer '{raster_id[:200]}'")
    return spec


def visible_rasters(request: Request) -> Mapping[str, RasterSpec]:
    role = caller_of(request).role.spec
    return {rid: spec for rid, spec in app_state(request).registry.rasters.items() if readable(role, spec)}


async def restrict(request: Request, view: LayerView, q: ItemsQuery) -> ItemsQuery:
    """The request's query with the caller's row rule (unchanged when there is none): the statement reads the rows
    with the rule first and applies the request's filter to what it lets through (gis.features.queries.source)."""
    node = await row_filter(request, view, q.filter_crs)
    return q if node is None else replace(q, rows=node)


async def row_filter(request: Request, view: LayerView, filter_crs: crs_.Crs = crs_.CRS84) -> Filter | None:
    """The caller's row rule on the layer as a CQL2 node (geometries in filter_crs); None when it has none."""
    if view.rows is None:
        return None
    return await auth_of(request).row_node(app_state(request), caller_of(request), view, filter_crs)


_AUDITED_PARAMETERS = ("bbox", "bbox-crs", "filter", "filter-lang", "datetime", "properties", "sortby", "limit",
                       "offset", "cursor", "crs")


async def audit_read(request: Request, view: LayerView, features: int | None, status: int = 200,
                     extra: Mapping[str, Any] | None = None) -> None:
    """One ops.audit_log row for a read of an internal or restricted layer; nothing for public ones."""
    if view.audited:
        await _audit(request, view.source.id, features, status, extra)


async def audit_raster_read(request: Request, spec: RasterSpec, extra: Mapping[str, Any] | None = None) -> None:
    """One ops.audit_log row for a read of an internal or restricted raster (coverage, tile, sampling)."""
    if spec.access is not AccessClass.public:
        await _audit(request, spec.id, None, 200, extra)


async def _audit(request: Request, layer_id: str, features: int | None, status: int,
                 extra: Mapping[str, Any] | None) -> None:
    caller = caller_of(request)
    query = {k: v[:2000] for k, v in request.query_params.items() if k in _AUDITED_PARAMETERS}
    if extra:
        query.update(extra)
    entry = audit.AuditEntry(caller.subject, caller.role.name, caller.method, caller.key_id, "read",
                             layer_id, request.url.path, query, features, status)
    async with app_state(request).pool.connection() as conn:
        await audit.record_async(conn, entry)


def forbidden(message: str) -> HTTPException:
    return HTTPException(403, message)


def mask_tag(view: LayerView) -> str:
    """A short tag for what a masked view leaves out (tile ETags and cache keys differ per view)."""
    return hashlib.sha256(",".join(view.masked).encode()).hexdigest()[:8]


# -- the audit log, for roles that may read it ---------------------------------------------------------

router = APIRouter(tags=["Administration"])


def _import_direct_reads(state: AppState, policy: Policy) -> None:
    """The direct PostGIS reads logged since the last import, so the log the auditor reads is whole. A log this
    process cannot read leaves the API's own rows to be served (and says so in the server log)."""
    log_file = db_read_audit.log_file_of(state.settings)
    if log_file is None or not log_file.exists():
        return
    try:
        with psycopg.connect(database_url(state.settings), autocommit=True) as conn:
            db_read_audit.import_direct_reads(conn, log_file, state.registry, policy)
    except (OSError, psycopg.Error) as exc:
        LOGGER.warning("direct reads not imported from %s: %s", log_file, exc)


@router.get("/audit", summary="The audit log (auditor roles): reads of internal and restricted data, admin actions")
async def audit_log(request: Request, layer: str | None = None, subject: str | None = None,
                    limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> Response:
    caller = caller_of(request)
    if caller.anonymous:
        raise unauthorized("the audit log needs credentials")
    if not caller.role.audit:
        raise forbidden("this role may not read the audit log")
    state = app_state(request)
    await run_in_threadpool(_import_direct_reads, state, auth_of(request).policy)
    async with state.pool.connection() as conn:
        entries = await audit.read(conn, layer, subject, limit)
        await audit.record_async(conn, audit.AuditEntry(
            caller.subject, caller.role.name, caller.method, caller.key_id, "admin:audit-read", layer,
            request.url.path, {k: v for k, v in (("layer", layer), ("subject", subject)) if v}, len(entries), 200))
    return Response(orjson.dumps({"entries": entries}), media_type="application/json")
