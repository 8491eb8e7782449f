"""The embedded PostGIS: a private PostgreSQL cluster under `.gridcover/`.

It uses the machine's own PostgreSQL server binaries. `initdb` and `postgres` refuse to
run as root, so when we are root the cluster runs as an unprivileged system user
(`GRIDCOVER_PG_USER`, default `postgres`) that owns the data folder. The cluster listens
on a Unix socket in its data folder and on a loopback port chosen once and remembered in
`cluster.json`, so two clones on one machine run side by side.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import pwd
import re
import secrets
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg

from api.errors import GridcoverError

DB_NAME = "gridcover"
DB_USER = "gridcover"
# Fallback home for the data folder when the cluster's user cannot reach ours (e.g. a
# clone under /root, which is mode 700).
SYSTEM_DATA_ROOT = Path("/var/lib/gridcover")
# sockaddr_un.sun_path is 108 bytes on Linux.
MAX_SOCKET_PATH = 100
INSTALL_HINT = (
    "run `sudo scripts/install_system.sh` (Debian: apt-get install postgresql-{v}-postgis-3)"
)


@dataclass(frozen=True)
class ClusterState:
    """What `cluster.json` remembers between runs."""

    port: int
    password: str
    data_dir: str


def find_pg_bindir(configured: Path | None = None) -> Path:
    """The folder of `initdb`, `pg_ctl` and `postgres`: configured, or the newest Debian one."""
    if configured is not None:
        if not (configured / "initdb").exists():
            raise GridcoverError(f"GRIDCOVER_PG_BINDIR={configured} has no initdb in it")
        return configured
    candidates = sorted(
        Path("/usr/lib/postgresql").glob("*/bin"),
        key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
        reverse=True,
    )
    for candidate in candidates:
        if (candidate / "initdb").exists():
            return candidate
    pg_config = shutil.which("pg_config")
    if pg_config:
        out = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True)
        bindir = Path(out.stdout.strip())
        if (bindir / "initdb").exists():
            return bindir
    raise GridcoverError(
        "no PostgreSQL server binaries found: install PostgreSQL 15 server "
        "(Debian: apt-get install postgresql-15) or set GRIDCOVER_PG_BINDIR"
    )


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now, as the OS hands them out."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return True
    return False


class EmbeddedCluster:
    """Create, start, stop and describe the cluster that lives under `home`."""

    def __init__(self, home: Path, bindir: Path | None = None, pg_user: str = "postgres") -> None:
        self.home = home.resolve()
        self._configured_bindir = bindir
        self.pg_user = pg_user
        self.state_file = self.home / "cluster.json"

    # -- facts -----------------------------------------------------------------------------
    @property
    def bindir(self) -> Path:
        return find_pg_bindir(self._configured_bindir)

    @property
    def state(self) -> ClusterState | None:
        if not self.state_file.exists():
            return None
        try:
            return ClusterState(**json.loads(self.state_file.read_text()))
        except (ValueError, TypeError) as exc:
            raise GridcoverError(
                f"{self.state_file} is damaged ({exc}); remove the folder {self.home} "
                "to start over (its data is lost)"
            ) from None

    def url(self, database: str = DB_NAME) -> str:
        """SQLAlchemy URL of a database in this cluster (the cluster must be initialised)."""
        state = self.state
        if state is None:
            raise GridcoverError(
                "the embedded database does not exist yet: run `gridcover db start`"
            )
        return f"postgresql+psycopg://{DB_USER}:{state.password}@127.0.0.1:{state.port}/{database}"

    def is_running(self) -> bool:
        state = self.state
        if state is None or not Path(state.data_dir, "PG_VERSION").exists():
            return False
        result = self._run(
            [str(self.bindir / "pg_ctl"), "status", "-D", state.data_dir], check=False
        )
        return result.returncode == 0

    def status(self) -> dict[str, object]:
        state = self.state
        return {
            "home": str(self.home),
            "initialised": state is not None,
            "running": self.is_running(),
            "port": state.port if state else None,
            "data_dir": state.data_dir if state else None,
        }

    # -- actions ---------------------------------------------------------------------------
    def start(self) -> ClusterState:
        """Initialise (first time) and start the cluster, then ensure the database and PostGIS.

        Harmless when the cluster already runs.
        """
        with self._lock():
            self._check_postgis_installed()
            state = self.state or self._initialise()
            if not self.is_running():
                state = self._start_server(state)
            self._ensure_database(state)
            return state

    def stop(self) -> bool:
        """Stop the server; returns False when it was not running."""
        with self._lock():
            state = self.state
            if state is None or not self.is_running():
                return False
            self._run(
                [str(self.bindir / "pg_ctl"), "stop", "-D", state.data_dir, "-m", "fast", "-w"]
            )
            return True

    # -- internals -------------------------------------------------------------------------
    @contextlib.contextmanager
    def _lock(self) -> Iterator[None]:
        self.home.mkdir(parents=True, exist_ok=True)
        with open(self.home / ".lock", "w") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def _as_cluster_user(self) -> bool:
        return os.geteuid() == 0

    def _run(self, argv: list[str], check: bool = True) -> subprocess.CompletedProcess[str]:
        program = Path(argv[0]).name
        if self._as_cluster_user():
            argv = ["runuser", "-u", self.pg_user, "--", *argv]
        result = subprocess.run(argv, capture_output=True, text=True, cwd="/")
        if check and result.returncode != 0:
            lines = (result.stderr or result.stdout).strip().splitlines()
            raise GridcoverError(f"{program} failed: {lines[-1] if lines else result.returncode}")
        return result

    def _check_postgis_installed(self) -> None:
        version = self._server_major_version()
        result = subprocess.run(
            [str(self.bindir / "pg_config"), "--sharedir"], capture_output=True, text=True
        )
        sharedir = Path(result.stdout.strip() or f"/usr/share/postgresql/{version}")
        if not (sharedir / "extension" / "postgis.control").exists():
            raise GridcoverError(
                f"PostGIS is not installed for PostgreSQL {version}: "
                + INSTALL_HINT.format(v=version)
            )

    def _server_major_version(self) -> str:
        result = subprocess.run(
            [str(self.bindir / "postgres"), "--version"], capture_output=True, text=True
        )
        match = re.search(r"(\d+)(?:\.\d+)?", result.stdout)
        return match.group(1) if match else "15"

    def _cluster_uid_gid(self) -> tuple[int, int]:
        try:
            entry = pwd.getpwnam(self.pg_user)
        except KeyError:
            raise GridcoverError(
                f"running as root, the cluster needs an unprivileged system user '{self.pg_user}': "
                f"create it (useradd --system {self.pg_user}) or set GRIDCOVER_PG_USER"
            ) from None
        return entry.pw_uid, entry.pw_gid

    def _choose_data_dir(self) -> Path:
        preferred = self.home / "pgdata"
        if not self._as_cluster_user():
            return preferred
        preferred.mkdir(parents=True, exist_ok=True)
        uid, gid = self._cluster_uid_gid()
        os.chown(preferred, uid, gid)
        preferred.chmod(0o700)
        if self._run(["test", "-w", str(preferred)], check=False).returncode == 0:
            return preferred
        # The cluster user cannot traverse a parent folder of ours: keep the data where it can.
        preferred.rmdir()
        digest = hashlib.sha1(str(self.home).encode()).hexdigest()[:12]
        fallback = SYSTEM_DATA_ROOT / digest
        SYSTEM_DATA_ROOT.mkdir(parents=True, exist_ok=True)
        SYSTEM_DATA_ROOT.chmod(0o755)
        fallback.mkdir(exist_ok=True)
        os.chown(fallback, uid, gid)
        fallback.chmod(0o700)
        return fallback

    def _initialise(self) -> ClusterState:
        data_dir = self._choose_data_dir()
        if (data_dir / "PG_VERSION").exists():
            raise GridcoverError(
                f"{data_dir} holds a cluster but {self.state_file} is missing "
                f"(left by a crashed run?): remove {data_dir} to start over"
            )
        password = secrets.token_urlsafe(24)
        pwfile = data_dir.parent / f".pw-{os.getpid()}"
        # created private: the folder may be readable by others
        with os.fdopen(os.open(pwfile, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as f:
            f.write(password + "\n")
        try:
            if self._as_cluster_user():
                uid, gid = self._cluster_uid_gid()
                os.chown(pwfile, uid, gid)
            pwfile.chmod(0o600)
            self._run(
                [
                    str(self.bindir / "initdb"),
                    "-D",
                    str(data_dir),
                    "-U",
                    DB_USER,
                    "--auth-local=trust",
                    "--auth-host=scram-sha-256",
                    f"--pwfile={pwfile}",
                    "-E",
                    "UTF8",
                    "--no-locale",
                ]
            )
        finally:
            pwfile.unlink(missing_ok=True)
        state = ClusterState(port=free_port(), password=password, data_dir=str(data_dir))
        self._save(state)
        return state

    def _save(self, state: ClusterState) -> None:
        self.state_file.write_text(json.dumps(state.__dict__, indent=2) + "\n")
        self.state_file.chmod(0o600)

    def _start_server(self, state: ClusterState) -> ClusterState:
        if port_in_use(state.port):
            state = ClusterState(port=free_port(), password=state.password, data_dir=state.data_dir)
            self._save(state)
        stale_pid = Path(state.data_dir, "postmaster.pid")
        if self._run(["test", "-e", str(stale_pid)], check=False).returncode == 0:
            # pg_ctl said it is not running, so the pid file is a crashed run's leftover.
            self._run(["rm", "-f", str(stale_pid)])
        socket_dir = state.data_dir if len(state.data_dir) < MAX_SOCKET_PATH - 20 else ""
        # Room for every server process's pool (GRIDCOVER_DB_POOL_SIZE each, up to 1.5x)
        # beside the command line, tests and benchmarks.
        options = (
            f"-p {state.port} -c listen_addresses=127.0.0.1 -k '{socket_dir}' "
            "-c max_connections=300"
        )
        log_file = Path(state.data_dir, "server.log")
        result = self._run(
            [
                str(self.bindir / "pg_ctl"),
                "start",
                "-D",
                state.data_dir,
                "-w",
                "-t",
                "60",
                "-l",
                str(log_file),
                "-o",
                options,
            ],
            check=False,
        )
        if result.returncode != 0:
            tail = self._run(["tail", "-n", "3", str(log_file)], check=False).stdout.strip()
            raise GridcoverError(
                f"PostgreSQL did not start ({tail.splitlines()[-1] if tail else 'no log'}); "
                f"see {log_file}"
            )
        return state

    def _ensure_database(self, state: ClusterState) -> None:
        admin = self.url("postgres").replace("postgresql+psycopg", "postgresql")
        deadline = time.monotonic() + 30
        while True:
            try:
                with psycopg.connect(admin, autocommit=True, connect_timeout=3) as conn:
                    exists = conn.execute(
                        "SELECT 1 FROM pg_database WHERE datname = %s", (DB_NAME,)
                    ).fetchone()
                    if not exists:
                        conn.execute(f'CREATE DATABASE "{DB_NAME}"')
                break
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise GridcoverError(
                        f"the embedded PostgreSQL on port {state.port} refuses connections; "
                        "run `gridcover db stop` and `gridcover db start`"
                    ) from None
                time.sleep(0.2)
        target = self.url(DB_NAME).replace("postgresql+psycopg", "postgresql")
        with psycopg.connect(target, autocommit=True) as conn:
            conn.execute("CREATE EXTENSION IF NOT EXISTS postgis")
