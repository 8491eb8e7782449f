"""The `gridcover` command as users run it: a real subprocess against the test database."""

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
from sqlalchemy import text

from api.auth import hash_key
from api.migrate import head_revision

GRIDCOVER = [str(Path(sys.executable).with_name("gridcover"))]


def run(args, env, check=True):
    result = subprocess.run(GRIDCOVER + args, env=env, capture_output=True, text=True, timeout=120)
    if check:
        assert result.returncode == 0, result.stderr
    return result


def test_db_url_prints_the_url_alone(cli_env, database_url):
    result = run(["db", "url"], cli_env)
    assert result.stdout == database_url + "\n"


def test_db_status_and_migrate_on_an_external_database(cli_env):
    head = head_revision()
    assert f"schema at revision {head}" in run(["db", "migrate"], cli_env).stderr
    status = run(["db", "status"], cli_env).stdout
    assert "postgis: 3." in status and f"schema: {head} (latest {head})" in status


def test_keys_create_prints_the_key_alone_on_its_last_line(cli_env, engine):
    result = run(["keys", "create", "--role", "dispatcher", "--name", "hotline desk"], cli_env)
    key = result.stdout.splitlines()[-1]
    assert key.startswith("gck_") and " " not in key
    with engine.connect() as conn:
        row = conn.execute(
            text("SELECT name, role FROM api_key WHERE key_hash = :h"), {"h": hash_key(key)}
        ).one()
    assert tuple(row) == ("hotline desk", "dispatcher")
    listed = run(["keys", "list"], cli_env).stdout
    assert "hotline desk" in listed and key not in listed


def test_bad_input_gets_one_line_errors_not_tracebacks(cli_env):
    cases = [
        (["keys", "create", "--role", "root", "--name", "x"], {}, "unknown role 'root'"),
        (["keys", "revoke", "999999"], {}, "no live key with id 999999"),
        (["db", "url"], {"GRIDCOVER_DATBASE_URL": "x"}, "unknown setting GRIDCOVER_DATBASE_URL"),
        (["db", "url"], {"GRIDCOVER_PORT": "eighty"}, "invalid GRIDCOVER_PORT"),
        (
            ["db", "status"],
            {"GRIDCOVER_DATABASE_URL": "postgresql://u:p@127.0.0.1:9/none"},
            "cannot reach the database",
        ),
        (["db", "url"], {"GRIDCOVER_DATABASE_URL": "mysql://u@h/db"}, "must point at PostgreSQL"),
    ]
    for args, extra_env, message in cases:
        result = run(args, cli_env | extra_env, check=False)
        assert result.returncode == 1, (args, result.stderr)
        assert message in result.stderr, (args, result.stderr)
        assert "Traceback" not in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_serve_refuses_a_port_in_use(cli_env):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run(["serve", "--port", str(port)], cli_env, check=False)
    assert result.returncode == 1
    assert f"port {port} on 127.0.0.1 is in use" in result.stderr


def test_serve_answers_health_until_stopped(cli_env):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen(
        [*GRIDCOVER, "serve", "--port", str(port)],
        env=cli_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                response = httpx.get(f"http://127.0.0.1:{port}/health", timeout=2)
                break
            except httpx.TransportError:
                assert server.poll() is None, server.stdout.read()
                assert time.monotonic() < deadline, "server did not come up"
                time.sleep(0.2)
        assert response.status_code == 200
        assert response.json()["postgis_version"].startswith("3.")
    finally:
        server.terminate()
        server.wait(timeout=15)
    assert server.returncode in (0, -15)
    assert os.environ.get("GRIDCOVER_DATABASE_URL") != cli_env["GRIDCOVER_DATABASE_URL"]
