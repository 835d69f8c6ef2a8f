"""API keys: made here, shown once, stored only as a keyed hash in ops.api_keys.

A key is `gk_<key id>_<secret>`, the secret 32 random bytes (256 bits), so a fast hash is enough:
nobody can guess through 2**256 secrets, and a slow password hash (bcrypt, argon2) would add tens of
milliseconds to every request for no gain. The hash is HMAC-SHA256 with a server pepper
(GIS_AUTH_PEPPER), so the key table alone, leaked, is not enough to test candidate keys either.
The key id in clear lets `gis keys list|revoke` and the audit log name a key without its secret.
"""

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from gis.errors import GisError, NotFound

PREFIX = "gk_"


@dataclass(frozen=True)
class KeyRecord:
    key_id: str
    name: str
    role: str
    claims: dict[str, Any]
    created_at: datetime | None = None
    revoked_at: datetime | None = None


def new_token() -> tuple[str, str]:
    """(key id, the full key to hand to the user once)."""
    key_id = secrets.token_hex(4)
    return key_id, f"{PREFIX}{key_id}_{secrets.token_urlsafe(32)}"


def key_hash(token: str, pepper: str) -> bytes:
    return hmac.new(pepper.encode(), token.encode(), hashlib.sha256).digest()


def key_id_of(token: str) -> str | None:
    if not token.startswith(PREFIX):
        return None
    key_id, _, secret = token[len(PREFIX):].partition("_")
    return key_id if key_id and secret else None


def create_key(conn: psycopg.Connection, name: str, role: str, pepper: str, claims: dict[str, Any] | None = None,
               token: str | None = None) -> tuple[KeyRecord, str]:
    """A new key; returns it with the token (shown once). `token` is for tests and migrations of old keys."""
    if token is None:
        key_id, token = new_token()
    else:
        found = key_id_of(token)
        if found is None:
            raise GisError("a key looks like gk_<id>_<secret>")
        key_id = found
    row = conn.execute(
        "INSERT INTO ops.api_keys (key_id, key_hash, name, role, claims) VALUES (%s, %s, %s, %s, %s) "
        "RETURNING created_at", (key_id, key_hash(token, pepper), name, role, Jsonb(claims or {}))).fetchone()
    assert row is not None
    return KeyRecord(key_id, name, role, dict(claims or {}), row[0]), token


def list_keys(conn: psycopg.Connection) -> list[KeyRecord]:
    rows = conn.execute(
        "SELECT key_id, name, role, claims, created_at, revoked_at FROM ops.api_keys ORDER BY created_at, key_id"
    ).fetchall()
    return [KeyRecord(*row) for row in rows]


def revoke_key(conn: psycopg.Connection, key_id: str) -> KeyRecord:
    row = conn.execute(
        "UPDATE ops.api_keys SET revoked_at = coalesce(revoked_at, clock_timestamp()) WHERE key_id = %s "
        "RETURNING key_id, name, role, claims, created_at, revoked_at", (key_id,)).fetchone()
    if row is None:
        raise NotFound(f"no key '{key_id}'")
    return KeyRecord(*row)


LOOKUP = ("SELECT key_id, name, role, claims FROM ops.api_keys "
          "WHERE key_hash = %s AND revoked_at IS NULL")


async def lookup(conn: psycopg.AsyncConnection, token: str, pepper: str) -> KeyRecord | None:
    cursor = await conn.execute(LOOKUP, (key_hash(token, pepper),), prepare=True)
    row = await cursor.fetchone()
    return KeyRecord(*row) if row is not None else None
