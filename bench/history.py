"""Realistic history for the bench layer: ten successive deliveries of the pipelines, loaded by `gis refresh`.

Each delivery is the one before it with about 5% of the segments changed (a new diameter and owner, as a
re-survey writes them), about 1% removed and about 1.5% added (new segments beside old ones), so after ten
the history table holds roughly half a million closed versions, as the issue's "realistic history" asks.
The instants between deliveries are recorded: the API benchmark asks `datetime` for one of them.
"""

import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import psycopg
import pyogrio
import shapely

from bench.procs import Measured, measure

LAYER = "pipelines"
DELIVERIES = 10
CHANGED, REMOVED, ADDED = 0.05, 0.01, 0.015
SEED = 2026


@dataclass(frozen=True)
class History:
    deliveries: int
    refreshes: list[Measured]  # `gis refresh pipelines --source <delivery k>`, k = 1 ... DELIVERIES
    instants: list[str]  # ISO time just after each delivery's refresh committed (before the next began)
    current_rows: int
    history_rows: int

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def _deliveries(source: Path, out_dir: Path, count: int = DELIVERIES) -> list[Path]:
    """The first `count` delivery files, each derived from the one before (written once; kept for reruns)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / f"pipelines-{k:02d}.gpkg" for k in range(1, count + 1)]
    if all(p.is_file() for p in paths):
        return paths
    # Through Arrow: the same rows and column types as GDAL's row-by-row path, in a quarter of the time (ten
    # files of a million segments each are part of `make bench`'s time).
    frame = pyogrio.read_dataframe(source, layer=LAYER, use_arrow=True)
    fid = "seg_id"
    rng = np.random.default_rng(SEED)
    for k, path in enumerate(paths, start=1):
        n = len(frame)
        changed = rng.choice(n, size=int(n * CHANGED), replace=False)
        frame.loc[frame.index[changed], "diameter_mm"] = frame["diameter_mm"].iloc[changed].fillna(100) + 50
        frame.loc[frame.index[changed], "owner"] = f"复测 {k:02d}"
        kept = np.ones(n, dtype=bool)
        kept[rng.choice(n, size=int(n * REMOVED), replace=False)] = False
        added = frame.iloc[rng.choice(n, size=int(n * ADDED), replace=False)].copy()
        added[fid] = added[fid].astype(str) + f"-N{k:02d}"
        added["geometry"] = shapely.transform(added.geometry.values, lambda xy: xy + 3.0)  # 3 m beside, in metres
        frame = pd.concat([frame.iloc[np.flatnonzero(kept)], added], ignore_index=True)
        if not path.is_file():  # the same random draws either way, so delivery k is always the same file
            pyogrio.write_dataframe(frame, path.with_suffix(".tmp.gpkg"), layer=LAYER, use_arrow=True)
            path.with_suffix(".tmp.gpkg").rename(path)
    return paths


def run(root: Path, url: str, source: Path, work: Path, say: object = print, count: int = DELIVERIES) -> History:
    """Write the deliveries (once) and refresh the layer with each in turn, recording the instant after each.

    `count` below ten loads only the first deliveries: a quick measure of what one changed delivery costs."""
    gis = str(root / ".venv" / "bin" / "gis")
    env = os.environ | {"GIS_DATABASE_URL": url, "GIS_REJECTS_DIR": str(work / "rejects")}
    paths = _deliveries(source, work / "deliveries", count)
    refreshes: list[Measured] = []
    instants: list[str] = []
    for k, path in enumerate(paths, start=1):
        result = measure([gis, "refresh", LAYER, "--source", str(path), "--quiet"], env=env, cwd=root,
                         shown=f"gis refresh {LAYER} --source {path.name}")
        if result.returncode != 0:
            raise RuntimeError(f"delivery {k} failed: {result.output_tail[-500:]}")
        refreshes.append(result)
        with psycopg.connect(url) as conn:
            row = conn.execute("SELECT now()").fetchone()
        instants.append(row[0].isoformat() if row else "")
        time.sleep(1.0)  # the next delivery's versions begin strictly after this instant
        if callable(say):
            say(f"  delivery {k}/{len(paths)}: {result.seconds}s")
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("VACUUM (ANALYZE) pipeline.pipelines")
        conn.execute("VACUUM (ANALYZE) pipeline.pipelines_history")
        counts = conn.execute("SELECT (SELECT count(*) FROM pipeline.pipelines), "
                              "(SELECT count(*) FROM pipeline.pipelines_history)").fetchone()
    assert counts is not None
    return History(len(paths), refreshes, instants, int(counts[0]), int(counts[1]))
