"""PostgreSQL's own CPU per statement for a request: the backend's user + system time (/proc), not the wall clock.

    .venv/bin/python -m bench.statement_cpu DATABASE_URL '/collections/pipelines/items?limit=100' [...] [--runs 2000]

Each request's statement is the one pgbench runs for the database alone (bench/dblimit.py: as the service sends
it, an audited read with its audit row), executed --runs times on one connection, prepared, with binary results
as the service's driver asks for them, in three rounds taken in turn across the requests; the least round is
reported. On a shared machine requests/s move with the load; a backend's CPU time per statement moves much less,
so a change to a statement is judged on this. The database server must run on this machine (/proc).
"""

import argparse
import os
from dataclasses import dataclass
from pathlib import Path

import psycopg

from bench import dblimit
from gis.layers import load_registry

ROOT = Path(__file__).resolve().parent.parent
ROUNDS = 3
WARM_UP = 5


@dataclass(frozen=True)
class StatementCpu:
    request: str
    ms: float  # the least round's backend CPU per execution
    rounds: tuple[float, ...]


def backend_cpu_s(pid: int) -> float:
    """User + system CPU seconds of process `pid` so far (fields 14 and 15 of /proc/PID/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure(url: str, requests: list[str], runs: int) -> list[StatementCpu]:
    registry = load_registry(ROOT / "layers", ROOT / "styles")
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute("SELECT pg_backend_pid()").fetchone()
        assert row is not None
        pid = int(row[0])
        statements = {}
        for r in requests:  # /collections/{layer}/items...
            spec = registry[r.split("?", 1)[0].split("/")[2]]
            statements[r] = dblimit.statements_for(conn, spec, "http://bench" + r, None, None)[0].encode()
        for query in statements.values():  # prepared and cached before any round counts
            for _ in range(WARM_UP):
                conn.execute(query, prepare=True, binary=True).fetchall()
        rounds: dict[str, list[float]] = {r: [] for r in requests}
        for _ in range(ROUNDS):
            for r, query in statements.items():
                began = backend_cpu_s(pid)
                for _ in range(runs):
                    conn.execute(query, prepare=True, binary=True).fetchall()
                rounds[r].append((backend_cpu_s(pid) - began) * 1000 / runs)
    return [StatementCpu(r, min(rounds[r]), tuple(rounds[r])) for r in requests]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("database_url")
    parser.add_argument("requests", nargs="+", help="paths with their query, e.g. /collections/x/items?limit=10")
    parser.add_argument("--runs", type=int, default=1000, help="executions per round (default 1000)")
    args = parser.parse_args(argv)
    for found in measure(args.database_url, args.requests, args.runs):
        rounds = ", ".join(f"{ms:.3f}" for ms in found.rounds)
        print(f"{found.request}: {found.ms:.3f} ms CPU per statement (rounds {rounds})", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
