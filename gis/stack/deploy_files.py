"""deploy/'s files: Jinja2 templates rendered with one deployment's values, and systemd units read back into
the command, environment and working directory they run (so the local stack runs exactly what a host's
systemd would)."""

import configparser
import re
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2

from gis.errors import ConfigError

NODE_UNIT = "systemd/gis-node@.service.j2"
WORKER_UNIT = "systemd/gis-worker@.service.j2"
REFRESH_UNIT = "systemd/gis-refresh.service.j2"
REFRESH_TIMER = "systemd/gis-refresh.timer.j2"
PRUNE_UNIT = "systemd/gis-prune.service.j2"
PRUNE_TIMER = "systemd/gis-prune.timer.j2"
ENV_FILE = "gis.env.j2"
HAPROXY = "haproxy/haproxy.cfg.j2"
TEMPLATES = (ENV_FILE, NODE_UNIT, WORKER_UNIT, REFRESH_UNIT, REFRESH_TIMER, PRUNE_UNIT, PRUNE_TIMER, HAPROXY)
_VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}|\$([A-Za-z_][A-Za-z0-9_]*)")


def render(deploy_dir: Path, template: str, values: dict[str, Any]) -> str:
    """One of deploy/'s templates with these values; a value the template needs and was not given is an error."""
    environment = jinja2.Environment(loader=jinja2.FileSystemLoader(deploy_dir), undefined=jinja2.StrictUndefined,
                                     keep_trailing_newline=True, autoescape=False)  # config files, not HTML
    try:
        return environment.get_template(template).render(**values)
    except jinja2.TemplateNotFound:
        raise ConfigError(f"{deploy_dir / template}: no such deploy file") from None
    except jinja2.UndefinedError as exc:
        raise ConfigError(f"{deploy_dir / template}: {exc.message}") from None


def rendered_name(template: str) -> str:
    return Path(template).name.removesuffix(".j2")


def render_all(deploy_dir: Path, values: dict[str, Any], out: Path) -> list[Path]:
    """Every template rendered into `out` (`gis deploy render`: the files a city's hosts install); the
    environment file, which holds the database passwords, readable by its owner only."""
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for template in TEMPLATES:
        target = out / rendered_name(template)
        target.write_text(render(deploy_dir, template, values))
        if template == ENV_FILE:
            target.chmod(0o600)
        written.append(target)
    return written


def read_env_file(text: str) -> dict[str, str]:
    """KEY=VALUE lines, as systemd's EnvironmentFile= reads them (comments and blank lines skipped)."""
    found: dict[str, str] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")) or "=" not in line:
            continue
        key, _, value = line.partition("=")
        found[key.strip()] = value.strip()
    return found


@dataclass(frozen=True)
class UnitCommand:
    argv: list[str]
    env: dict[str, str]
    cwd: Path


def unit_command(unit_text: str, instance: str, files: dict[str, str]) -> UnitCommand:
    """What systemd would run for `unit@instance`: ExecStart with %i and ${VAR} filled in from its
    EnvironmentFile, that environment, and its WorkingDirectory. `files` maps an EnvironmentFile's path to
    its text (the stack renders them; a host reads them from disk)."""
    parser = configparser.ConfigParser(interpolation=None, strict=False)
    parser.optionxform = str  # type: ignore[assignment,method-assign]  # keys are case-sensitive in systemd
    parser.read_string(unit_text)
    service = parser["Service"]
    env: dict[str, str] = {}
    env_file = service.get("EnvironmentFile", "").lstrip("-")
    if env_file:
        if env_file not in files:
            raise ConfigError(f"the unit reads {env_file}, which was not rendered")
        env.update(read_env_file(files[env_file]))

    def expand(word: str) -> str:
        word = word.replace("%i", instance).replace("%%", "%")
        return _VARIABLE.sub(lambda m: env.get(m.group(1) or m.group(2), ""), word)

    argv = [expand(word) for word in shlex.split(service["ExecStart"])]
    return UnitCommand(argv, env, Path(expand(service.get("WorkingDirectory", "/"))))
