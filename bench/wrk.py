"""Running wrk on loopback with a bounded duration and reading its summary (one JSON line from done.lua)."""

import json
import os
import subprocess
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

DONE_SCRIPT = Path(__file__).resolve().parent / "done.lua"
PATHS_SCRIPT = Path(__file__).resolve().parent / "paths.lua"  # a spread of URLs: one run, many paths
MARK = "WRKJSON "


@dataclass(frozen=True)
class WrkSettings:
    duration_s: int = 10
    threads: int = 2
    connections: int = 8
    timeout_s: int = 30


@dataclass(frozen=True)
class WrkResult:
    url: str
    requests: int
    duration_s: float
    requests_per_s: float
    bytes: int
    latency_ms: dict[str, float]
    errors: dict[str, int]

    @property
    def failed(self) -> int:
        """Requests that did not end in a 2xx/3xx answer within the timeout."""
        return sum(self.errors.values())

    def as_dict(self) -> dict[str, object]:
        return asdict(self) | {"failed": self.failed}


def parse_summary(url: str, output: str) -> WrkResult:
    """The result from wrk's output; ValueError if the JSON line from done.lua is missing."""
    line = next((ln for ln in output.splitlines() if ln.startswith(MARK)), None)
    if line is None:
        raise ValueError(f"wrk printed no summary for {url}: {output.strip()[-300:]}")
    raw = json.loads(line.removeprefix(MARK))
    duration = raw["duration_us"] / 1e6
    latency = {key: round(value / 1000, 3) for key, value in raw["latency_us"].items()}
    return WrkResult(
        url=url,
        requests=raw["requests"],
        duration_s=round(duration, 3),
        requests_per_s=round(raw["requests"] / duration, 2) if duration else 0.0,
        bytes=raw["bytes"],
        latency_ms=latency,
        errors={key: int(value) for key, value in raw["errors"].items()},
    )


def command(url: str, settings: WrkSettings, headers: dict[str, str] | None = None,
            paths_file: Path | None = None) -> list[str]:
    script = PATHS_SCRIPT if paths_file is not None else DONE_SCRIPT
    args = ["wrk", f"-t{settings.threads}", f"-c{settings.connections}", f"-d{settings.duration_s}s",
            f"--timeout={settings.timeout_s}s", "-s", str(script)]
    for name, value in (headers or {}).items():
        args += ["-H", f"{name}: {value}"]
    return [*args, url] + (["--", str(paths_file)] if paths_file is not None else [])


def run(url: str, settings: WrkSettings, headers: dict[str, str] | None = None,
        paths: list[str] | None = None) -> WrkResult:
    """One wrk run against `url`, or, with `paths`, against each of them in turn (same host as url)."""
    if not url.startswith(("http://127.0.0.1:", "http://localhost:")):
        raise ValueError(f"load tests run on loopback only, not {url}")
    with tempfile.TemporaryDirectory(prefix="gis-wrk-") as work:
        paths_file = None
        if paths:
            paths_file = Path(work) / "paths.txt"
            paths_file.write_text("\n".join(paths) + "\n", encoding="utf-8")
        out = subprocess.run(command(url, settings, headers, paths_file), capture_output=True, text=True,
                             timeout=settings.duration_s + settings.timeout_s + 60, check=False,
                             env=os.environ | {"WRK_DONE_SCRIPT": str(DONE_SCRIPT)})
    if out.returncode != 0:
        raise RuntimeError(f"wrk failed ({out.returncode}) for {url}: {out.stderr.strip()[-300:]}")
    return parse_summary(url, out.stdout)
