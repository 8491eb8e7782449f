"""The embedded PostGIS manager, on a cluster of the test's own (not the one of `make run`)."""

import json
import shutil
import socket

import psycopg
import pytest

from api.embedded import EmbeddedCluster
from api.errors import GridcoverError


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    home = tmp_path_factory.mktemp("embedded") / ".gridcover"
    managed = EmbeddedCluster(home)
    yield managed
    managed.stop()
    state = managed.state
    if state:
        shutil.rmtree(state.data_dir, ignore_errors=True)


def _libpq(url: str) -> str:
    return url.replace("postgresql+psycopg", "postgresql")


def test_start_creates_a_cluster_with_postgis_and_is_idempotent(cluster):
    first = cluster.start()
    second = cluster.start()
    assert first == second
    assert cluster.is_running()
    with psycopg.connect(_libpq(cluster.url())) as conn:
        version = conn.execute("SELECT postgis_version()").fetchone()[0]
    assert version.startswith("3.")
    remembered = json.loads((cluster.home / "cluster.json").read_text())
    assert remembered["port"] == first.port


def test_data_survives_stop_and_start(cluster):
    cluster.start()
    with psycopg.connect(_libpq(cluster.url())) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS kept (v text)")
        conn.execute("INSERT INTO kept VALUES ('still here')")
    assert cluster.stop() is True
    assert cluster.stop() is False
    assert not cluster.is_running()
    cluster.start()
    with psycopg.connect(_libpq(cluster.url())) as conn:
        assert conn.execute("SELECT v FROM kept").fetchall() == [("still here",)]


def test_a_taken_port_moves_the_cluster_to_a_free_one(cluster):
    cluster.stop()
    old_port = cluster.state.port
    with socket.socket() as squatter:
        # the stopped server's connections may linger in TIME_WAIT on that port
        squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        squatter.bind(("127.0.0.1", old_port))
        squatter.listen()
        state = cluster.start()
    assert state.port != old_port
    assert json.loads((cluster.home / "cluster.json").read_text())["port"] == state.port


def test_a_stale_pid_file_from_a_crash_does_not_block_start(cluster):
    cluster.stop()
    data_dir = cluster.state.data_dir
    pid_file = f"{data_dir}/postmaster.pid"
    # A crashed server leaves its pid file; 999999 is no live process.
    cluster._run(["sh", "-c", f"printf '999999\\n{data_dir}\\n' > {pid_file}"])
    cluster.start()
    assert cluster.is_running()


def test_damaged_state_file_is_a_clear_error(tmp_path):
    home = tmp_path / ".gridcover"
    home.mkdir()
    (home / "cluster.json").write_text("{not json")
    with pytest.raises(GridcoverError, match="damaged"):
        EmbeddedCluster(home).start()
