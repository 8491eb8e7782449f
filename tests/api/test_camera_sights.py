"""api.services.camera_sights: the in-memory cameras behind `cameras/visible`, and the
notices (migration 0008) that keep every server process's copy current."""

from __future__ import annotations

import time
from collections.abc import Iterator

import numpy as np
import psycopg
import pytest
from sqlalchemy import Engine, text

from api.db import libpq_url, make_engine
from api.services import camera_sights
from api.services.camera_sights import CAMERA_CHANGED_CHANNEL, CameraSights
from api.settings import Settings
from geo.camera import DORI_LEVELS, is_active, level_ranges_m, visible_from
from geo.codes import make_gb28181


@pytest.fixture(scope="module")
def demo_engine(small_demo_url) -> Iterator[Engine]:
    engine = make_engine(small_demo_url, Settings(database_url=small_demo_url))
    yield engine
    engine.dispose()


@pytest.fixture
def sights(demo_engine) -> Iterator[CameraSights]:
    """A CameraSights listening, with its first read done."""
    found = CameraSights(demo_engine)
    found.start()
    wait_for(lambda: found.visible(0.0, 0.0) is not None, timeout_s=30)
    yield found
    found.stop()


@pytest.fixture
def spare_cameras(demo_engine) -> Iterator[list[int]]:
    """Ids of cameras of the demo whose name, status and azimuth a test may change by
    hand: they are put back after (their stored FOVs are never touched)."""
    with demo_engine.connect() as conn:
        rows = conn.execute(
            text("SELECT id, name, status, azimuth_deg FROM camera ORDER BY id LIMIT 400")
        ).all()
    yield [row.id for row in rows]
    with demo_engine.begin() as conn:
        conn.execute(
            text(
                "UPDATE camera SET name = :name, status = :status, azimuth_deg = :azimuth_deg "
                "WHERE id = :id"
            ),
            [row._asdict() for row in rows],
        )


def exact_answers(engine: Engine, points: list[tuple[float, float]]) -> list[list[tuple]]:
    """Per EPSG:4546 point, (camera id, level) of the cameras that see it, from every
    camera as stored, best level first, then nearest: what any in-memory shortcut must
    give."""
    with engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT id, kind, ST_X(geom_m), ST_Y(geom_m), azimuth_deg, hfov_deg, "
                "resolution_h_px, coalesce(range_m, 'NaN'), status FROM camera"
            )
        ).all()
    ids, kind, cx, cy, az, hfov, res, cap, status = (np.array(c) for c in zip(*rows, strict=True))
    active = is_active(status)
    ranges = level_ranges_m(kind, res.astype(float), hfov.astype(float), cap.astype(float))
    answers = []
    for x, y in points:
        distance, _, level = visible_from(x, y, cx, cy, az, hfov, ranges)
        seen = np.flatnonzero(active & (level >= 0))
        order = seen[np.lexsort((distance[seen], -level[seen]))]
        answers.append([(int(ids[i]), DORI_LEVELS[level[i]]) for i in order])
    return answers


def answer(sights: CameraSights, x: float, y: float) -> list[tuple[int, str]]:
    return [(c["camera_id"], c["level"]) for c in sights.visible_now(x, y)]


def points_near_cameras(engine: Engine, n: int, seed: int = 5) -> list[tuple[float, float]]:
    """EPSG:4546 points 0-60 m from random cameras, so most are seen by some."""
    with engine.connect() as conn:
        xy = np.array(conn.execute(text("SELECT ST_X(geom_m), ST_Y(geom_m) FROM camera")).all())
    rng = np.random.default_rng(seed)
    picked = xy[rng.integers(0, len(xy), n)]
    angle, reach = rng.uniform(0, 2 * np.pi, n), rng.uniform(0, 60, n)
    return list(
        zip(picked[:, 0] + reach * np.sin(angle), picked[:, 1] + reach * np.cos(angle), strict=True)
    )


def camera_position(engine: Engine, camera_id: int) -> tuple[float, float]:
    """The camera's EPSG:4546 position."""
    with engine.connect() as conn:
        return conn.execute(
            text("SELECT ST_X(geom_m), ST_Y(geom_m) FROM camera WHERE id = :id"),
            {"id": camera_id},
        ).one()


SET_STATUS = text("UPDATE camera SET status = :status WHERE id = :id")


def wait_for(condition, timeout_s: float = 2.0) -> float:
    """Seconds until `condition()` held; fails after `timeout_s`."""
    start = time.monotonic()
    while not condition():
        assert time.monotonic() - start < timeout_s, "not seen in time"
        time.sleep(0.01)
    return time.monotonic() - start


def test_answers_equal_the_exact_geometry_over_every_camera(demo_engine, sights):
    points = points_near_cameras(demo_engine, 300)
    answers = [answer(sights, x, y) for x, y in points]
    assert sum(1 for a in answers if a) > 100  # the points do meet cameras
    assert answers == exact_answers(demo_engine, points)


def test_each_write_statement_announces_its_cameras(demo_engine, spare_cameras):
    """Ids for up to 200 cameras, `*` for more, nothing for a rolled-back write or one
    that changed no row."""
    url = libpq_url(demo_engine.url.render_as_string(hide_password=False))
    rename = "UPDATE camera SET name = name || '.' WHERE id = ANY(%s)"
    with psycopg.connect(url, autocommit=True) as listener, psycopg.connect(url) as writer:
        listener.execute(f"LISTEN {CAMERA_CHANGED_CHANNEL}")
        writer.execute(rename, [spare_cameras[:3]])
        writer.commit()
        writer.execute(rename, [spare_cameras[:200]])
        writer.commit()
        writer.execute(rename, [spare_cameras[:201]])
        writer.commit()
        new_id = writer.execute(
            "INSERT INTO camera (gb_id, name, kind, height_m, azimuth_deg, hfov_deg, "
            "resolution_h_px, county_code, geom) SELECT %s, 'new', kind, 4, 0, 360, 1920, "
            "county_code, geom FROM camera WHERE id = %s RETURNING id",
            [make_gb28181("433101", 132, 777_002), spare_cameras[0]],
        ).fetchone()[0]
        writer.commit()
        writer.execute("DELETE FROM camera WHERE id = %s", [new_id])
        writer.commit()
        writer.execute("DELETE FROM camera WHERE id = %s", [spare_cameras[0]])
        writer.rollback()
        writer.execute("UPDATE camera SET name = name WHERE false")
        writer.commit()
        payloads = [n.payload for n in listener.notifies(timeout=1.0)]
    ids = [sorted(map(int, p.split(","))) if p != "*" else p for p in payloads]
    assert ids == [
        sorted(spare_cameras[:3]),
        sorted(spare_cameras[:200]),
        "*",
        [new_id],
        [new_id],
    ]


def test_a_camera_written_by_hand_in_sql_is_seen_within_a_second(
    demo_engine, sights, spare_cameras
):
    """Another process's write reaches this one by its notice, with no call here."""
    model = spare_cameras[0]
    x, y = camera_position(demo_engine, model)
    with demo_engine.begin() as conn:
        county = conn.execute(
            text("SELECT county_code FROM camera WHERE id = :id"), {"id": model}
        ).scalar_one()
        camera_id = conn.execute(
            text(
                "INSERT INTO camera (gb_id, name, kind, height_m, azimuth_deg, hfov_deg, "
                "resolution_h_px, status, county_code, geom) "
                "SELECT :gb_id, 'by hand', 'dome', 4, 0, 360, 1920, 'online', county_code, geom "
                "FROM camera WHERE id = :id RETURNING id"
            ),
            {"gb_id": make_gb28181(county, 132, 777_001), "id": model},
        ).scalar_one()

    def sees() -> bool:
        found = sights.visible(x, y)
        return found is not None and camera_id in [c["camera_id"] for c in found]

    try:
        wait_for(sees)
        with demo_engine.begin() as conn:
            conn.execute(
                text("UPDATE camera SET status = 'fault' WHERE id = :id"), {"id": camera_id}
            )
        wait_for(lambda: not sees())
        with demo_engine.begin() as conn:
            conn.execute(
                text("UPDATE camera SET status = 'online' WHERE id = :id"), {"id": camera_id}
            )
        wait_for(sees)
    finally:
        with demo_engine.begin() as conn:
            conn.execute(text("DELETE FROM camera WHERE id = :id"), {"id": camera_id})
    wait_for(lambda: not sees())


def test_writes_here_hold_answers_until_read_and_others_do_not(demo_engine, spare_cameras):
    """In the writing process an answer never comes from before its write; a write
    learnt from another process's notice is read without holding answers up."""
    found = CameraSights(demo_engine)
    assert found.visible(0.0, 0.0) is None  # nothing read yet
    found.catch_up()
    assert found.visible(0.0, 0.0) == []
    found.changed([spare_cameras[0]])
    assert found.visible(0.0, 0.0) is None
    assert found.visible_now(0.0, 0.0) == []
    assert found.visible(0.0, 0.0) == []
    found.changed([spare_cameras[1]], here=False)
    found.changed(None, here=False)
    assert found.visible(0.0, 0.0) == []
    found.changed(None)
    assert found.visible(0.0, 0.0) is None


def test_a_notice_that_is_no_list_of_ids_reads_everything(demo_engine, sights, spare_cameras):
    camera_id = spare_cameras[2]
    x, y = camera_position(demo_engine, camera_id)
    with demo_engine.begin() as conn:
        conn.execute(SET_STATUS, {"id": camera_id, "status": "online"})
    wait_for(lambda: camera_id in [c["camera_id"] for c in sights.visible(x, y)])
    url = libpq_url(demo_engine.url.render_as_string(hide_password=False))
    # the camera goes offline without a notice (triggers off for this session), then
    # someone sends a notice by hand
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SET session_replication_role = replica")
        conn.execute("UPDATE camera SET status = 'offline' WHERE id = %s", [camera_id])
        conn.execute(f"NOTIFY {CAMERA_CHANGED_CHANNEL}, 'cameras 7 and 9'")
    wait_for(lambda: camera_id not in [c["camera_id"] for c in sights.visible(x, y)])


def test_many_small_changes_merge_into_one_index_with_the_same_answers(
    demo_engine, spare_cameras, monkeypatch
):
    monkeypatch.setattr(camera_sights, "MERGE_AT_CAMERAS", 4)
    found = CameraSights(demo_engine)
    found.catch_up()
    points = points_near_cameras(demo_engine, 150, seed=9)
    turned = spare_cameras[:10]
    for camera_id in turned:
        with demo_engine.begin() as conn:
            conn.execute(
                text(
                    "UPDATE camera SET azimuth_deg = mod((azimuth_deg + 90)::numeric, 360), "
                    "status = CASE WHEN id % 3 = 0 THEN 'offline' ELSE 'online' END "
                    "WHERE id = :id"
                ),
                {"id": camera_id},
            )
        found.changed([camera_id])
        found.catch_up()
    assert len(found._state.recent_rows) < 4  # merged at least once
    assert [answer(found, x, y) for x, y in points] == exact_answers(demo_engine, points)


def test_cameras_read_again_replace_their_old_rows_before_any_merge(demo_engine, spare_cameras):
    """Between merges the cameras read again answer in place of their old rows: turned,
    gone offline, or never in the index at all (an id that no camera has)."""
    found = CameraSights(demo_engine)
    found.catch_up()
    turned = spare_cameras[10:22]
    # rings around each camera turned, where its old and new sectors lie
    ring = np.radians(np.arange(0, 360, 30))
    points = [
        (x + 15 * np.sin(a), y + 15 * np.cos(a))
        for x, y in (camera_position(demo_engine, i) for i in turned)
        for a in ring
    ]
    with demo_engine.begin() as conn:
        conn.execute(
            text(
                "UPDATE camera SET azimuth_deg = mod((azimuth_deg + 120)::numeric, 360), "
                "status = CASE WHEN id % 4 = 0 THEN 'offline' ELSE 'online' END "
                "WHERE id = ANY(:ids)"
            ),
            {"ids": turned},
        )
    for camera_id in [*turned, 10**12]:
        found.changed([camera_id])
        found.catch_up()
    assert len(found._state.recent_rows) == len(turned) + 1  # no merge yet
    assert [answer(found, x, y) for x, y in points] == exact_answers(demo_engine, points)


def test_notices_missed_while_the_listener_was_away_are_read_after(
    demo_engine, sights, spare_cameras
):
    camera_id = spare_cameras[1]
    x, y = camera_position(demo_engine, camera_id)
    with demo_engine.begin() as conn:
        conn.execute(
            text(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE query = 'LISTEN gridcover_camera_changed' AND datname = current_database()"
            )
        )
        conn.execute(text("UPDATE camera SET status = 'offline' WHERE id = :id"), {"id": camera_id})
    wait_for(
        lambda: (
            (found := sights.visible(x, y)) is not None
            and camera_id not in [c["camera_id"] for c in found]
        ),
        timeout_s=5.0,
    )
