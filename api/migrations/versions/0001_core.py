"""Core registry: admin areas, versioned grids, cameras, api keys, audit log.

Storage is EPSG:4326; where queries need metres a stored generated column keeps the
geometry in EPSG:4546 (CGCS2000 / 3-degree Gauss-Kruger CM 111E).

Revision ID: 0001
Revises:
Create Date: 2026-11-29
"""

from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

UPGRADE = """
CREATE EXTENSION IF NOT EXISTS postgis;
CREATE EXTENSION IF NOT EXISTS btree_gist;

CREATE TABLE admin_area (
    code        varchar(12) PRIMARY KEY
                CHECK (code ~ '^[0-9]{6}$' OR code ~ '^[0-9]{9}$' OR code ~ '^[0-9]{12}$'),
    level       text NOT NULL
                CHECK (level IN ('prefecture', 'county', 'township', 'village')),
    name        text NOT NULL CHECK (name <> ''),
    parent_code varchar(12) REFERENCES admin_area (code),
    geom        geometry(MultiPolygon, 4326) NOT NULL,
    geom_m      geometry(MultiPolygon, 4546)
                GENERATED ALWAYS AS (ST_Transform(geom, 4546)) STORED,
    area_m2     double precision
                GENERATED ALWAYS AS (ST_Area(ST_Transform(geom, 4546))) STORED
);
CREATE INDEX admin_area_geom_idx ON admin_area USING gist (geom);
CREATE INDEX admin_area_geom_m_idx ON admin_area USING gist (geom_m);
CREATE INDEX admin_area_parent_idx ON admin_area (parent_code);
CREATE INDEX admin_area_level_idx ON admin_area (level);

-- A grid is a chain of versions sharing one code; the current one has valid_to NULL.
CREATE TABLE grid (
    id           bigserial PRIMARY KEY,
    code         varchar(15) NOT NULL CHECK (code ~ '^[0-9]{15}$'),
    version      integer NOT NULL DEFAULT 1 CHECK (version >= 1),
    name         text NOT NULL CHECK (name <> ''),
    village_code varchar(12) NOT NULL REFERENCES admin_area (code),
    kind         text NOT NULL DEFAULT '综合网格' CHECK (kind IN ('综合网格', '专属网格')),
    households   integer CHECK (households >= 0),
    population   integer CHECK (population >= 0),
    worker_name  text,
    worker_phone text,
    valid_from   timestamptz NOT NULL DEFAULT now(),
    valid_to     timestamptz,
    geom         geometry(MultiPolygon, 4326) NOT NULL,
    geom_m       geometry(MultiPolygon, 4546)
                 GENERATED ALWAYS AS (ST_Transform(geom, 4546)) STORED,
    area_m2      double precision
                 GENERATED ALWAYS AS (ST_Area(ST_Transform(geom, 4546))) STORED,
    CONSTRAINT grid_code_in_village CHECK (left(code, 12) = village_code),
    CONSTRAINT grid_valid_interval CHECK (valid_to IS NULL OR valid_to > valid_from),
    CONSTRAINT grid_code_version_key UNIQUE (code, version),
    CONSTRAINT grid_versions_do_not_overlap
        EXCLUDE USING gist (code WITH =, tstzrange(valid_from, valid_to) WITH &&)
);
CREATE UNIQUE INDEX grid_current_code_idx ON grid (code) WHERE valid_to IS NULL;
CREATE INDEX grid_geom_idx ON grid USING gist (geom);
CREATE INDEX grid_geom_m_idx ON grid USING gist (geom_m);
CREATE INDEX grid_village_idx ON grid (village_code);

CREATE TABLE camera (
    id              bigserial PRIMARY KEY,
    gb_id           varchar(20) NOT NULL UNIQUE CHECK (gb_id ~ '^[0-9]{20}$'),
    name            text NOT NULL,
    kind            text NOT NULL CHECK (kind IN ('bullet', 'dome', 'ptz')),
    height_m        real NOT NULL CHECK (height_m >= 0),
    azimuth_deg     real NOT NULL CHECK (azimuth_deg >= 0 AND azimuth_deg < 360),
    hfov_deg        real NOT NULL CHECK (hfov_deg > 0 AND hfov_deg <= 360),
    resolution_h_px integer NOT NULL CHECK (resolution_h_px > 0),
    range_m         real CHECK (range_m > 0),
    status          text NOT NULL DEFAULT 'online' CHECK (status IN ('online', 'offline', 'fault')),
    owner           text NOT NULL DEFAULT 'public'
                    CHECK (owner IN ('public', 'industry', 'enterprise', 'residential')),
    installed_at    timestamptz,
    county_code     varchar(6) NOT NULL REFERENCES admin_area (code),
    geom            geometry(Point, 4326) NOT NULL,
    geom_m          geometry(Point, 4546) GENERATED ALWAYS AS (ST_Transform(geom, 4546)) STORED,
    version         integer NOT NULL DEFAULT 1,
    updated_at      timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT camera_gb_id_in_county CHECK (left(gb_id, 6) = county_code)
);
CREATE INDEX camera_geom_idx ON camera USING gist (geom);
CREATE INDEX camera_geom_m_idx ON camera USING gist (geom_m);
CREATE INDEX camera_county_idx ON camera (county_code);

CREATE TABLE api_key (
    id           serial PRIMARY KEY,
    name         text NOT NULL CHECK (name <> ''),
    role         text NOT NULL CHECK (role IN ('viewer', 'dispatcher', 'planner', 'admin')),
    key_prefix   varchar(16) NOT NULL,
    key_hash     char(64) NOT NULL UNIQUE,
    created_at   timestamptz NOT NULL DEFAULT now(),
    expires_at   timestamptz,
    revoked_at   timestamptz,
    last_used_at timestamptz
);

-- Append-only: the triggers below refuse UPDATE and DELETE, whoever asks.
CREATE TABLE audit_log (
    id        bigserial PRIMARY KEY,
    at        timestamptz NOT NULL DEFAULT now(),
    actor     text NOT NULL,
    action    text NOT NULL,
    entity    text NOT NULL,
    entity_id text,
    before    jsonb,
    after     jsonb
);
CREATE INDEX audit_log_entity_idx ON audit_log (entity, entity_id);
CREATE INDEX audit_log_at_idx ON audit_log (at);

CREATE FUNCTION audit_log_is_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_log is append-only';
END $$;
CREATE TRIGGER audit_log_no_update BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION audit_log_is_append_only();
CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION audit_log_is_append_only();
"""

DOWNGRADE = """
DROP TABLE IF EXISTS audit_log;
DROP FUNCTION IF EXISTS audit_log_is_append_only();
DROP TABLE IF EXISTS api_key;
DROP TABLE IF EXISTS camera;
DROP TABLE IF EXISTS grid;
DROP TABLE IF EXISTS admin_area;
"""


def upgrade() -> None:
    op.execute(UPGRADE)


def downgrade() -> None:
    op.execute(DOWNGRADE)
