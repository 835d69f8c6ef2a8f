"""Running wrk on loopback with a bounded duration and reading its summary (one JSON line from done.lua)."""

import json
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path

DONE_SCRIPT = Path(__file__).resolve().parent / "done.lua"
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


def command(url: str, settings: WrkSettings, headers: dict[str, str] | None = None) -> list[str]:
    args = ["wrk", f"-t{settings.threads}", f"-c{settings.connections}", f"-d{settings.duration_s}s",
            f"--timeout={settings.timeout_s}s", "-s", str(DONE_SCRIPT)]
    for name, value in (headers or {}).items():
        args += ["-H", f"{name}: {value}"]
    return [*args, url]


def run(url: str, settings: WrkSettings, headers: dict[str, str] | None = None) -> WrkResult:
    if not url.startswith(("http://127.0.0.1:", "http://localhost:")):
        raise ValueError(f"load tests run on loopback only, not {url}")
    out = subprocess.run(command(url, settings, headers), capture_output=True, text=True,
                         timeout=settings.duration_s + settings.timeout_s + 60, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"wrk failed ({out.returncode}) for {url}: {out.stderr.strip()[-300:]}")
    return parse_summary(url, out.stdout)
