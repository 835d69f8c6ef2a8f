"""Executing an OGC API process on the real service, as one of the test roles."""

import httpx
from conftest import TEST_KEYS


def execute(api: str, process: str, inputs: dict, prefer: str | None = None,
            role: str | None = "admin") -> httpx.Response:
    """POST /processes/{process}/execution; role None executes anonymously."""
    headers = {"Prefer": prefer} if prefer else {}
    if role:
        headers["X-API-Key"] = TEST_KEYS[role]
    return httpx.post(f"{api}/processes/{process}/execution", json={"inputs": inputs}, headers=headers, timeout=60)
