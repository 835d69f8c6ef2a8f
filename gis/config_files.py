"""Reading the project's YAML files (layers, rules, policy) into validated models.

Every failure is a ConfigError that names the file and, for a bad value, the key (`rules[3].layer`).
"""

from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from gis.errors import ConfigError


def read_yaml(path: Path, what: str) -> dict[str, Any]:
    """The file's top-level mapping; `what` names the file's role in messages ("overlap rules")."""
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: no {what} file") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the {what} file: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: (file): expected a mapping of keys")
    return raw


def key_of(loc: tuple[Any, ...]) -> str:
    """A pydantic error location as a key path: fields[0].type."""
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "(file)"


def describe(error: ValidationError) -> str:
    return "; ".join(
        f"{key_of(problem['loc'])}: {'unknown key' if problem['type'] == 'extra_forbidden' else problem['msg']}"
        for problem in error.errors()
    )


def validate[M: BaseModel](path: Path, model: type[M], raw: dict[str, Any]) -> M:
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(f"{path}: {describe(exc)}") from exc


def load_checked[M: BaseModel](path: Path, model: type[M], what: str, check: Callable[[M], None]) -> M:
    """Read, validate, then `check` the model against the rest of the project (a ValueError names the key)."""
    parsed = validate(path, model, read_yaml(path, what))
    try:
        check(parsed)
    except ValueError as exc:
        raise ConfigError(f"{path}: {exc}") from exc
    return parsed


