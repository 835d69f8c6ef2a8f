"""Real-time sensing: readings posted over HTTP, served as an event layer, graded into warnings and watched.

The service runs on a clone of its own; warnings are checked against levels computed here from
layers/sensor-thresholds.yml read as plain YAML (not through the service's model).
"""

import copy
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
import yaml
from conftest import ROOT, TEST_KEYS, cloned_database

from gis.errors import ConfigError
from gis.layers import LayerRegistry
from gis.refresh.runner import RefreshRequest, run_refresh
from gis.sensing.thresholds import load_thresholds
from gis.settings import Settings

READINGS = "/api/pipeline/sensor-readings"
WARNINGS = "/api/pipeline/sensor-warnings"
WRITER_KEY = "gk_t0sensw_sensor-writer-key-of-the-test-suite-01"
PIPELINE = {"X-API-Key": TEST_KEYS["pipeline_app"]}
SHENYANG = timezone(timedelta(hours=8))
THRESHOLDS = yaml.safe_load((ROOT / "layers" / "sensor-thresholds.yml").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def sensing_db(server_url: str, template_db: str) -> Iterator[str]:
    from gis.security.keys import create_key

    with cloned_database(server_url, template_db, "gis_test_sensing") as url:
        with psycopg.connect(url) as conn:
            create_key(conn, "test sensor gateway", "sensor_writer", pepper="", token=WRITER_KEY)
        yield url


@pytest.fixture(scope="module")
def api(sensing_db: str, serve_api: Callable[[str], AbstractContextManager[str]]) -> Iterator[str]:
    with serve_api(sensing_db) as base:
        yield base


@pytest.fixture(scope="module")
def db(sensing_db: str) -> Iterator[psycopg.Connection]:
    with psycopg.connect(sensing_db, autocommit=True) as conn:
        yield conn


def _sensor(db: psycopg.Connection, sensor_type: str, utility: str, skip: int = 0) -> str:
    row = db.execute("SELECT fid FROM pipeline.pipe_sensors WHERE sensor_type = %s AND utility = %s "
                     "ORDER BY fid OFFSET %s LIMIT 1", (sensor_type, utility, skip)).fetchone()
    assert row is not None, f"the sample has no {utility} {sensor_type} sensor"
    return str(row[0])


def _at(minutes_ago: int) -> str:
    """A recent instant (readings may not be in the future), whole minutes, in Shenyang's offset."""
    moment = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(minutes=minutes_ago)
    return moment.astimezone(SHENYANG).isoformat()


def _post(api: str, readings: list[dict[str, Any]], headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.post(api + READINGS, json={"readings": readings}, headers=PIPELINE if headers is None else headers,
                      timeout=60)


def expected_level(sensor_type: str, utility: str, value: float) -> str | None:
    """The most severe level whose limit the value reaches, straight from the YAML file."""
    order = [level["id"] for level in THRESHOLDS["levels"]]
    found: str | None = None
    for t in THRESHOLDS["thresholds"]:
        if t["sensor_type"] != sensor_type or (t.get("utility") and utility not in t["utility"]):
            continue
        for level, limit in t["limits"].items():
            reached = value >= limit if t["direction"] == "above" else value <= limit
            if reached and (found is None or order.index(level) > order.index(found)):
                found = level
    return found


def _fid(sensor: str, at: str) -> str:
    stamp = datetime.fromisoformat(at).astimezone(UTC)
    return f"{sensor}@{stamp:%Y%m%dT%H%M%S}Z"


def test_posted_batch_is_served_as_event_features_at_its_time(api: str, db: psycopg.Connection) -> None:
    sensor = _sensor(db, "flow", "water")
    batch = [{"sensor": sensor, "observed_at": _at(m), "value": v, "quality": "good"}
             for m, v in ((300, 101.5), (290, 99.0), (280, 104.25))]
    answer = _post(api, batch)
    assert answer.status_code == 200, answer.text
    assert answer.json()["inserted"] == 3
    window = f"{_at(301)}/{_at(279)}"
    page = httpx.get(api + "/collections/sensor_readings/items", params={"datetime": window, "sensor": sensor},
                     headers=PIPELINE, timeout=30)
    assert page.status_code == 200, page.text
    got = {f["id"]: f for f in page.json()["features"]}
    assert set(got) == {_fid(sensor, r["observed_at"]) for r in batch}
    geometry = db.execute("SELECT ST_X(geom), ST_Y(geom) FROM pipeline.pipe_sensors WHERE fid = %s",
                          (sensor,)).fetchone()
    for reading in batch:
        feature = got[_fid(sensor, reading["observed_at"])]
        assert feature["properties"]["value"] == reading["value"]
        assert feature["properties"]["unit"] == "m³/h"
        assert feature["properties"]["sensor_type"] == "flow"
        assert feature["geometry"]["coordinates"] == pytest.approx(list(geometry), abs=1e-7)
    outside = httpx.get(api + "/collections/sensor_readings/items", headers=PIPELINE, timeout=30,
                        params={"datetime": f"{_at(278)}/..", "sensor": sensor}).json()
    assert outside["features"] == []


def test_unfiltered_pages_count_the_posted_readings(api: str, db: psycopg.Connection) -> None:
    sensor = _sensor(db, "flow", "heat")
    assert _post(api, [{"sensor": sensor, "observed_at": _at(500), "value": 50.0}]).status_code == 200
    page = httpx.get(api + "/collections/sensor_readings/items", params={"limit": 1}, headers=PIPELINE,
                     timeout=30).json()
    count = db.execute("SELECT count(*) FROM pipeline.sensor_readings").fetchone()
    assert count is not None and page["numberMatched"] == count[0]


def test_warnings_have_the_level_the_thresholds_give(api: str, db: psycopg.Connection) -> None:
    cases = [("pressure", "water", v) for v in (0.30, 0.155, 0.12, 0.08, 0.04, 0.75, 0.95)]
    cases += [("gas_leak", "gas", v) for v in (3.0, 12.0, 22.0, 30.0, 55.0)]
    sensors = {(k, u): _sensor(db, k, u, skip=1) for k, u, _ in cases}
    batch = [{"sensor": sensors[(k, u)], "observed_at": _at(1000 + i), "value": v} for i, (k, u, v) in enumerate(cases)]
    assert _post(api, batch).status_code == 200
    expected = {_fid(r["sensor"], r["observed_at"]): expected_level(k, u, r["value"])
                for r, (k, u, _) in zip(batch, cases, strict=True)}
    assert {level for level in expected.values()} >= {None, "blue", "yellow", "orange", "red"}
    answer = httpx.get(api + WARNINGS, headers=PIPELINE, timeout=30, params={
        "sensor": ",".join(sorted(set(sensors.values()))), "datetime": f"{_at(1000 + len(cases))}/{_at(999)}",
        "limit": 1000})
    assert answer.status_code == 200, answer.text
    got = {f["id"]: f["properties"]["level"] for f in answer.json()["features"]}
    assert got == {fid: level for fid, level in expected.items() if level is not None}


def test_warnings_filter_by_level(api: str, db: psycopg.Connection) -> None:
    sensor = _sensor(db, "gas_leak", "gas", skip=2)
    batch = [{"sensor": sensor, "observed_at": _at(2000 + i), "value": v} for i, v in enumerate((12.0, 60.0, 30.0))]
    assert _post(api, batch).status_code == 200
    answer = httpx.get(api + WARNINGS, headers=PIPELINE, timeout=30,
                       params={"sensor": sensor, "level": "red,orange"}).json()
    assert sorted(f["properties"]["value"] for f in answer["features"]) == [30.0, 60.0]
    assert {f["properties"]["level"] for f in answer["features"]} == {"orange", "red"}


def test_bad_readings_are_never_graded(api: str, db: psycopg.Connection) -> None:
    sensor = _sensor(db, "gas_leak", "gas", skip=3)
    at = _at(2500)
    assert _post(api, [{"sensor": sensor, "observed_at": at, "value": 80.0, "quality": "bad"}]).status_code == 200
    answer = httpx.get(api + WARNINGS, headers=PIPELINE, timeout=30, params={"sensor": sensor}).json()
    assert _fid(sensor, at) not in {f["id"] for f in answer["features"]}


def test_a_bad_batch_is_refused_whole_with_each_bad_reading(api: str, db: psycopg.Connection) -> None:
    sensor = _sensor(db, "pressure", "heat")
    good = {"sensor": sensor, "observed_at": _at(3000), "value": 0.8}
    batch = [good,
             {"sensor": "SN-NOPE", "observed_at": _at(3001), "value": 0.8},
             {"sensor": sensor, "observed_at": _at(3002), "value": 0.8, "quality": "excellent"},
             {"sensor": sensor, "observed_at": "2026-10-31T08:30:00", "value": 0.8},
             {"sensor": sensor, "observed_at": _at(3004), "value": "high"},
             {"sensor": sensor, "observed_at": _at(3005), "value": 9.0},
             {"sensor": sensor, "observed_at": _at(3006), "value": 0.8, "unit": "bar"},
             {"sensor": "SN\x00", "observed_at": _at(3007), "value": 0.8}]
    answer = _post(api, batch)
    assert answer.status_code == 400
    body = answer.json()
    assert body["parameter"] == "readings"
    problems = {(e["index"], e["parameter"]) for e in body["errors"]}
    # the body-only checks report first; the readings that pass them are checked against the sensors after
    assert problems == {(2, "readings[2].quality"), (3, "readings[3].observed_at"), (4, "readings[4].value"),
                        (7, "readings[7].sensor")}
    fixed = [r for i, r in enumerate(batch) if i not in (2, 3, 4, 7)]
    answer = _post(api, fixed)
    assert answer.status_code == 400
    problems = {(e["index"], e["parameter"]) for e in answer.json()["errors"]}
    assert problems == {(1, "readings[1].sensor"), (2, "readings[2].value"), (3, "readings[3].unit")}
    stored = db.execute("SELECT count(*) FROM pipeline.sensor_readings WHERE fid = %s",
                        (_fid(sensor, good["observed_at"]),)).fetchone()
    assert stored == (0,)


@pytest.mark.parametrize(("body", "parameter"), [
    (b"not json", "body"), (b'{"rows": []}', "body"), (b'{"readings": []}', "readings"),
    (b'{"readings": {"sensor": "x"}}', "readings"),
])
def test_a_malformed_body_is_a_400_naming_it(api: str, body: bytes, parameter: str) -> None:
    answer = httpx.post(api + READINGS, content=body, headers={**PIPELINE, "Content-Type": "application/json"})
    assert answer.status_code == 400
    assert answer.json()["parameter"] == parameter


def test_too_many_readings_are_refused(api: str) -> None:
    readings = [{"sensor": "SN-000001", "observed_at": _at(10), "value": 1.0}] * 10_001
    answer = _post(api, readings)
    assert answer.status_code == 400
    assert "at most 10,000" in answer.json()["description"]


def test_posting_needs_credentials_and_the_right(api: str, db: psycopg.Connection) -> None:
    reading = [{"sensor": _sensor(db, "flow", "storm"), "observed_at": _at(4000), "value": 20.0}]
    assert _post(api, reading, headers={}).status_code == 401
    assert _post(api, reading, headers={"X-API-Key": "gk_nosuch_key-that-was-never-made"}).status_code == 401
    assert _post(api, reading, headers={"X-API-Key": TEST_KEYS["analyst"]}).status_code == 403  # reads, no write
    assert _post(api, reading, headers={"X-API-Key": TEST_KEYS["planner"]}).status_code == 404  # cannot see it
    assert _post(api, reading, headers={"X-API-Key": WRITER_KEY}).status_code == 200


def test_a_sensor_gateway_may_post_but_not_read(api: str) -> None:
    writer = {"X-API-Key": WRITER_KEY}
    assert httpx.get(api + WARNINGS, headers=writer).status_code == 404
    assert httpx.get(api + "/collections/sensor_readings/items", headers=writer).status_code == 404
    assert httpx.get(api + WARNINGS).status_code == 404  # anonymous: an internal layer


def test_reposting_is_idempotent_and_a_changed_value_is_a_correction(api: str, db: psycopg.Connection) -> None:
    sensor = _sensor(db, "pressure", "gas")
    batch = [{"sensor": sensor, "observed_at": _at(5000 + i), "value": 0.12} for i in range(3)]
    first = _post(api, batch).json()
    again = _post(api, batch + batch[:1]).json()  # an exact repeat inside the batch is one reading
    assert (first["inserted"], again["inserted"], again["corrected"], again["unchanged"]) == (3, 0, 0, 3)
    assert again["duplicates_in_batch"] == 1
    fids = [_fid(sensor, r["observed_at"]) for r in batch]
    history = db.execute("SELECT count(*) FROM pipeline.sensor_readings_history WHERE fid = ANY(%s)",
                         (fids,)).fetchone()
    assert history == (0,)
    corrected = _post(api, [{**batch[0], "value": 0.02}]).json()
    assert (corrected["inserted"], corrected["corrected"]) == (0, 1)
    now = db.execute("SELECT value FROM pipeline.sensor_readings WHERE fid = %s", (fids[0],)).fetchone()
    old = db.execute("SELECT value, valid_to IS NOT NULL FROM pipeline.sensor_readings_history WHERE fid = %s",
                     (fids[0],)).fetchall()
    assert now == (0.02,) and old == [(0.12, True)]
    versions = httpx.get(f"{api}/collections/sensor_readings/items/{fids[0]}/history", headers=PIPELINE).json()
    assert [f["properties"]["value"] for f in versions["features"]] == [0.12, 0.02]


def test_a_conflicting_repeat_inside_a_batch_is_refused(api: str, db: psycopg.Connection) -> None:
    reading = {"sensor": _sensor(db, "pressure", "water", skip=2), "observed_at": _at(5500), "value": 0.3}
    answer = _post(api, [reading, {**reading, "value": 0.31}])
    assert answer.status_code == 400
    assert [e["index"] for e in answer.json()["errors"]] == [1]


def test_the_watch_cursor_returns_only_newer_warnings(api: str, db: psycopg.Connection) -> None:
    start = httpx.get(api + WARNINGS, headers=PIPELINE, params={"level": "red"}, timeout=30).json()
    while any(link["rel"] == "next" for link in start["links"]):  # read to the end: the cursor is now
        start = httpx.get(api + WARNINGS, headers=PIPELINE, timeout=30,
                          params={"level": "red", "since": start["cursor"]}).json()
    cursor = start["cursor"]
    quiet = httpx.get(api + WARNINGS, headers=PIPELINE, params={"level": "red", "since": cursor}).json()
    assert quiet["features"] == []
    sensor = _sensor(db, "gas_leak", "gas", skip=4)
    batch = [{"sensor": sensor, "observed_at": _at(6000), "value": 75.0},
             {"sensor": sensor, "observed_at": _at(6001), "value": 2.0}]
    assert _post(api, batch).status_code == 200
    news = httpx.get(api + WARNINGS, headers=PIPELINE, params={"level": "red", "since": cursor}).json()
    assert [f["id"] for f in news["features"]] == [_fid(sensor, batch[0]["observed_at"])]
    after = httpx.get(api + WARNINGS, headers=PIPELINE, params={"level": "red", "since": news["cursor"]}).json()
    assert after["features"] == []


def test_a_long_poll_answers_when_a_warning_arrives(api: str, db: psycopg.Connection) -> None:
    import threading

    start = httpx.get(api + WARNINGS, headers=PIPELINE, params={"level": "red", "limit": 1000}, timeout=30).json()
    while any(link["rel"] == "next" for link in start["links"]):
        start = httpx.get(api + WARNINGS, headers=PIPELINE, timeout=30,
                          params={"level": "red", "since": start["cursor"], "limit": 1000}).json()
    sensor = _sensor(db, "gas_leak", "gas", skip=5)
    reading = {"sensor": sensor, "observed_at": _at(6500), "value": 90.0}
    timer = threading.Timer(1.5, lambda: _post(api, [reading]))
    timer.start()
    try:
        waited = httpx.get(api + WARNINGS, headers=PIPELINE, timeout=60,
                           params={"level": "red", "since": start["cursor"], "wait": 20})
    finally:
        timer.join()
    assert [f["id"] for f in waited.json()["features"]] == [_fid(sensor, reading["observed_at"])]


@pytest.mark.parametrize(("params", "parameter"), [
    ({"level": "purple"}, "level"), ({"since": "!!"}, "since"), ({"datetime": "yesterday"}, "datetime"),
    ({"colour": "red"}, "colour"), ({"limit": "0"}, "limit"), ({"wait": "31"}, "wait"),
    ({"sensor": "SN\x00"}, "sensor"),
])
def test_bad_warning_parameters_are_400s_naming_them(api: str, params: dict[str, str], parameter: str) -> None:
    answer = httpx.get(api + WARNINGS, headers=PIPELINE, params=params)
    assert answer.status_code == 400
    assert answer.json()["parameter"] == parameter


def test_warnings_as_an_html_page_with_a_map(api: str) -> None:
    page = httpx.get(api + WARNINGS, headers=PIPELINE, params={"f": "html", "level": "red"}, timeout=30)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    red = next(level["colour"] for level in THRESHOLDS["levels"] if level["id"] == "red")
    assert "<svg" in page.text and f'fill="{red}"' in page.text


def test_posts_and_warning_reads_are_audited(api: str, db: psycopg.Connection) -> None:
    sensor = _sensor(db, "flow", "sewer")
    assert _post(api, [{"sensor": sensor, "observed_at": _at(7000), "value": 10.0}]).status_code == 200
    warnings = httpx.get(api + WARNINGS, headers=PIPELINE, params={"sensor": sensor})
    assert warnings.status_code == 200
    rows = db.execute("SELECT action, path, features, status FROM ops.audit_log WHERE layer_id = 'sensor_readings' "
                      "ORDER BY audit_id DESC LIMIT 2").fetchall()
    assert rows == [("read", WARNINGS, warnings.json()["numberReturned"], 200), ("write", READINGS, 1, 200)]


def test_a_refresh_of_the_delivery_keeps_the_posted_readings(api: str, db: psycopg.Connection, settings: Settings,
                                                             registry: LayerRegistry, sensing_db: str) -> None:
    sensor = _sensor(db, "flow", "water", skip=1)
    reading = {"sensor": sensor, "observed_at": _at(8000), "value": 77.0}
    assert _post(api, [reading]).status_code == 200
    spec = registry["sensor_readings"]
    result = run_refresh(sensing_db, RefreshRequest(spec, settings.samples_dir / spec.source.path,
                                                    settings.city_extent, settings.rejects_dir, force=True,
                                                    progress=False))
    assert result.counts.closed == 0
    kept = db.execute("SELECT value FROM pipeline.sensor_readings WHERE fid = %s",
                      (_fid(sensor, reading["observed_at"]),)).fetchone()
    assert kept == (77.0,)


def test_a_threshold_out_of_order_names_the_file_and_key(tmp_path: Path, registry: LayerRegistry) -> None:
    broken = copy.deepcopy(THRESHOLDS)
    broken["thresholds"][0]["limits"]["red"] = 0.5  # a `below` limit must fall as the level rises
    path = tmp_path / "sensor-thresholds.yml"
    path.write_text(yaml.safe_dump(broken, allow_unicode=True), encoding="utf-8")
    with pytest.raises(ConfigError, match=rf"{path}: thresholds\[0\]\.limits: a more severe level must be lower"):
        load_thresholds(path, registry)


def test_an_unknown_sensor_type_names_the_file_and_key(tmp_path: Path, registry: LayerRegistry) -> None:
    broken = copy.deepcopy(THRESHOLDS)
    broken["thresholds"][0]["sensor_type"] = "water_level"
    path = tmp_path / "sensor-thresholds.yml"
    path.write_text(yaml.safe_dump(broken, allow_unicode=True), encoding="utf-8")
    with pytest.raises(ConfigError, match=rf"{path}: thresholds\[0\]\.sensor_type"):
        load_thresholds(path, registry)


def test_a_role_that_writes_an_unknown_layer_is_refused(registry: LayerRegistry) -> None:
    from gis.security.policy import build_policy

    with pytest.raises(ConfigError, match=r"roles\.gateway\.writes: no layer 'readings'"):
        build_policy({"roles": {"public": {}, "gateway": {"writes": ["readings"]}}}, registry)


def test_only_an_event_layer_may_keep_what_its_delivery_leaves_out() -> None:
    from pydantic import ValidationError

    from gis.layers import TemporalSpec

    assert TemporalSpec(kind="event", field="observed_at", missing="keep").missing == "keep"
    with pytest.raises(ValidationError, match="'missing: keep' is for event layers"):
        TemporalSpec(kind="versioned", missing="keep")
