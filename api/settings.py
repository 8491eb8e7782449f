"""Configuration, read from `GRIDCOVER_*` environment variables (and an optional `.env`)."""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from api.errors import GridcoverError

ENV_PREFIX = "GRIDCOVER_"
# A batch of 100,000 lookup points with ids is about 6 MB of JSON.
DEFAULT_MAX_BODY_BYTES = 32 * 2**20
DEFAULT_MAX_UPLOAD_BYTES = 100 * 2**20
# The prefecture's outline segmentized to 50 m has ~18,000 vertices, a county's ~7,000.
DEFAULT_MAX_GEOMETRY_VERTICES = 100_000


class Settings(BaseSettings):
    """Every setting has a `GRIDCOVER_` environment variable of the same name in capitals."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_file=".env", extra="forbid", frozen=True
    )

    database_url: str | None = Field(
        default=None,
        description="SQLAlchemy URL of an external PostGIS; unset means the embedded one.",
    )
    home: Path = Field(
        default=Path(".gridcover"),
        description="Folder of the embedded PostgreSQL cluster and its remembered port.",
    )
    pg_bindir: Path | None = Field(
        default=None, description="PostgreSQL server binaries; found automatically if unset."
    )
    pg_user: str = Field(
        default="postgres",
        description="Unprivileged system user that runs the embedded cluster when run as root.",
    )
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)
    db_pool_size: int = Field(
        default=20, ge=1, description="sessions kept open per server process (up to 1.5x)"
    )
    db_warm_at_start: bool = Field(
        default=True,
        description="open the pool's sessions at start and load PostGIS and PROJ in each",
    )
    db_connect_timeout_s: int = Field(default=3, ge=1)
    statement_timeout_ms: int = Field(default=30_000, ge=100)
    log_level: Literal["critical", "error", "warning", "info", "debug", "trace"] = "info"
    workers: int = Field(
        default=1, ge=1, le=32, description="server processes; each holds its own grid index"
    )
    key_recheck_s: float = Field(
        default=1.0,
        ge=0,
        description="API keys are remembered per process; a key revoked elsewhere "
        "(CLI, another worker) stops working within this many seconds.",
    )
    coverage_road_weight: float = Field(
        default=0.5, ge=0, description="weight of road length in the public-space coverage"
    )
    coverage_place_weight: float = Field(
        default=0.5, ge=0, description="weight of key places in the public-space coverage"
    )
    coverage_min_gap_m2: float = Field(
        default=25.0,
        ge=0,
        description="gap polygons smaller than this are left out of gap listings (never "
        "out of the ratios)",
    )
    tile_cache_mb: float = Field(
        default=128.0,
        ge=0,
        description="vector tiles kept per server process, in MB, while their data hold (0: none)",
    )
    lookup_max_distance_m: float = Field(
        default=5000.0,
        gt=0,
        description="A point in no grid answers with the nearest grid up to this far (metres).",
    )
    max_body_bytes: int = Field(
        default=DEFAULT_MAX_BODY_BYTES,
        ge=1024,
        description="largest request body (JSON, forms) in bytes; a larger one gets 413",
    )
    max_upload_bytes: int = Field(
        default=DEFAULT_MAX_UPLOAD_BYTES,
        ge=1024,
        description="largest uploaded file (POST .../import) in bytes; a larger one gets 413",
    )
    max_geometry_vertices: int = Field(
        default=DEFAULT_MAX_GEOMETRY_VERTICES,
        ge=5,
        description="most positions one geometry may have (request bodies, imported files)",
    )
    incident_work_periods: str = Field(
        default="08:30-12:00,14:30-17:30",
        pattern=r"^\s*\d{1,2}:\d{2}\s*-\s*\d{1,2}:\d{2}\s*(,\s*\d{1,2}:\d{2}\s*-\s*\d{1,2}:\d{2}\s*)*$",
        description="working periods of a working day, local time; incident time limits "
        "count only these hours",
    )
    incident_work_weekdays: str = Field(
        default="mon-fri",
        pattern=r"^(mon|tue|wed|thu|fri|sat|sun)(-(mon|tue|wed|thu|fri|sat|sun))?"
        r"(,(mon|tue|wed|thu|fri|sat|sun)(-(mon|tue|wed|thu|fri|sat|sun))?)*$",
        description="working weekdays, e.g. mon-fri or mon-fri,sat",
    )
    incident_timezone: str = Field(
        default="Asia/Shanghai", description="time zone of the working hours (IANA name)"
    )
    incident_holidays: str = Field(
        default="",
        pattern=r"^(\d{4}-\d{2}-\d{2}(\.\.\d{4}-\d{2}-\d{2})?(,\d{4}-\d{2}-\d{2}(\.\.\d{4}-\d{2}-\d{2})?)*)?$",
        description="days off that would be working days (法定节假日): dates and ranges, "
        "e.g. 2025-10-01..2025-10-08,2026-01-01",
    )
    incident_extra_workdays: str = Field(
        default="",
        pattern=r"^(\d{4}-\d{2}-\d{2}(\.\.\d{4}-\d{2}-\d{2})?(,\d{4}-\d{2}-\d{2}(\.\.\d{4}-\d{2}-\d{2})?)*)?$",
        description="days worked that would be off (调休), same form as the holidays",
    )
    incident_duplicate_radius_m: float = Field(
        default=100.0,
        ge=0,
        le=10_000,
        description="open incidents of the same category this near (metres) are duplicate hints",
    )
    incident_duplicate_window_h: float = Field(
        default=24.0,
        ge=0,
        le=24 * 365,
        description="... and reported within this many hours of the new one",
    )


def unknown_env_settings() -> list[str]:
    """`GRIDCOVER_*` variables that name no setting (typos would otherwise pass silently)."""
    known = {ENV_PREFIX + name.upper() for name in Settings.model_fields}
    known.add("GRIDCOVER_TEST_DATABASE_URL")  # read by the test-suite only
    return sorted(k for k in os.environ if k.startswith(ENV_PREFIX) and k not in known)


@lru_cache
def get_settings() -> Settings:
    """The process-wide settings; raises a `GridcoverError` naming what is wrong."""
    unknown = unknown_env_settings()
    if unknown:
        known = ", ".join(ENV_PREFIX + n.upper() for n in Settings.model_fields)
        raise GridcoverError(f"unknown setting {', '.join(unknown)}; known settings: {known}")
    try:
        return Settings()
    except ValidationError as exc:
        first = exc.errors()[0]
        name = ENV_PREFIX + str(first["loc"][0]).upper() if first["loc"] else "settings"
        raise GridcoverError(f"invalid {name}: {first['msg']}") from None
