"""What an answer may not show: the server's own file paths (in a reader's error, a stored refresh message).

GDAL, pyogrio and the refresh quote the file they opened, which on the server is a temporary or storage path;
answers show `<file>` instead. The CLI keeps the paths (the operator's own files).
"""

import re
from collections.abc import Iterable
from typing import Any

# An absolute path of two segments or more (GDAL's /vsizip/ and the like in front included), not inside a URL
# (after a host, a port or a scheme's slashes).
_SERVER_PATH = re.compile(r"(?<![\w:/.])(/vsi\w+/)?(/[^\s'\"():,<>]+){2,}")


def without_paths(text: str, placeholder: str = "<file>", known: Iterable[str] = ()) -> str:
    """`text` with server paths replaced: first the `known` ones (the paths the caller itself handed a reader,
    replaced exactly, so a scratch directory with spaces or unusual characters goes too), then anything that
    looks like an absolute path."""
    for path in sorted((p for p in known if p), key=len, reverse=True):
        text = text.replace(path, placeholder)
    return _SERVER_PATH.sub(placeholder, text)


def scrubbed(value: Any, known: Iterable[str] = ()) -> Any:
    """A JSON value with every string's server paths replaced (`known` ones exactly, as without_paths)."""
    known = tuple(known)
    if isinstance(value, str):
        return without_paths(value, known=known)
    if isinstance(value, dict):
        return {k: scrubbed(v, known) for k, v in value.items()}
    if isinstance(value, list):
        return [scrubbed(v, known) for v in value]
    return value
