"""The work on top of the registry: target layers, FOVs, coverage, incidents, gazetteer.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-29
"""

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

UPGRADE = """
CREATE EXTENSION IF NOT EXISTS pg_trgm;

-- Target layers: what coverage is for.
CREATE TABLE road (
    id         bigserial PRIMARY KEY,
    road_class text NOT NULL
               CHECK (road_class IN ('national', 'provincial', 'county', 'village', 'street')),
    name       text,
    geom       geometry(MultiLineString, 4326) NOT NULL,
    geom_m     geometry(MultiLineString, 4546)
               GENERATED ALWAYS AS (ST_Transform(geom, 4546)) STORED,
    length_m   double precision GENERATED ALWAYS AS (ST_Length(ST_Transform(geom, 4546))) STORED
);
CREATE INDEX road_geom_idx ON road USING gist (geom);
CREATE INDEX road_geom_m_idx ON road USING gist (geom_m);

CREATE TABLE key_place (
    id     bigserial PRIMARY KEY,
    kind   text NOT NULL CHECK (kind IN ('school', 'hospital', 'clinic', 'market', 'bus_station',
                                         'square', 'village_committee', 'other')),
    name   text,
    geom   geometry(Geometry, 4326) NOT NULL
           CHECK (GeometryType(geom) IN ('POINT', 'POLYGON', 'MULTIPOLYGON')),
    geom_m geometry(Geometry, 4546) GENERATED ALWAYS AS (ST_Transform(geom, 4546)) STORED
);
CREATE INDEX key_place_geom_idx ON key_place USING gist (geom);
CREATE INDEX key_place_geom_m_idx ON key_place USING gist (geom_m);

-- Field of view of a camera at one DORI level, built in metres.
CREATE TABLE camera_fov (
    camera_id bigint NOT NULL REFERENCES camera (id) ON DELETE CASCADE,
    level     text NOT NULL CHECK (level IN ('detect', 'observe', 'recognize', 'identify')),
    range_m   real NOT NULL CHECK (range_m >= 0),
    geom_m    geometry(Polygon, 4546) NOT NULL,
    geom      geometry(Polygon, 4326) GENERATED ALWAYS AS (ST_Transform(geom_m, 4326)) STORED,
    PRIMARY KEY (camera_id, level)
);
CREATE INDEX camera_fov_geom_idx ON camera_fov USING gist (geom);
CREATE INDEX camera_fov_geom_m_idx ON camera_fov USING gist (geom_m);

CREATE TABLE coverage (
    grid_id        bigint NOT NULL REFERENCES grid (id) ON DELETE CASCADE,
    level          text NOT NULL CHECK (level IN ('detect', 'observe', 'recognize', 'identify')),
    covered_m2     double precision NOT NULL CHECK (covered_m2 >= 0),
    ratio          double precision NOT NULL CHECK (ratio BETWEEN 0 AND 1),
    road_length_m  double precision NOT NULL DEFAULT 0,
    road_covered_m double precision NOT NULL DEFAULT 0,
    road_ratio     double precision CHECK (road_ratio BETWEEN 0 AND 1),
    places_covered integer NOT NULL DEFAULT 0,
    places_total   integer NOT NULL DEFAULT 0,
    public_ratio   double precision CHECK (public_ratio BETWEEN 0 AND 1),
    camera_count   integer NOT NULL DEFAULT 0,
    gap_m          geometry(MultiPolygon, 4546),
    computed_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (grid_id, level)
);

CREATE TABLE incident_category (
    code             text PRIMARY KEY,
    name             text NOT NULL,
    department       text NOT NULL,
    time_limit_hours real NOT NULL CHECK (time_limit_hours > 0)
);

CREATE TABLE incident (
    id            bigserial PRIMARY KEY,
    category      text NOT NULL REFERENCES incident_category (code),
    description   text NOT NULL DEFAULT '',
    channel       text NOT NULL DEFAULT 'hotline'
                  CHECK (channel IN ('hotline', 'grid_app', 'wechat', 'walk_in', 'open311',
                                     'import')),
    location      geometry(Point, 4326),
    raw_lon       double precision,
    raw_lat       double precision,
    raw_coord_sys text,
    accuracy_m    real CHECK (accuracy_m >= 0),
    address       text,
    grid_id       bigint REFERENCES grid (id),
    grid_code     varchar(15),
    assignment    jsonb NOT NULL DEFAULT '{}'::jsonb,
    department    text,
    status        text NOT NULL DEFAULT 'reported'
                  CHECK (status IN ('reported', 'accepted', 'rejected', 'dispatched', 'in_progress',
                                    'feedback', 'verified', 'returned', 'closed', 'evaluated')),
    reported_at   timestamptz NOT NULL DEFAULT now(),
    due_at        timestamptz,
    closed_at     timestamptz,
    evaluation    jsonb,
    photos        jsonb NOT NULL DEFAULT '[]'::jsonb,
    created_by    text,
    deleted_at    timestamptz
);
CREATE INDEX incident_location_idx ON incident USING gist (location);
CREATE INDEX incident_grid_idx ON incident (grid_id);
CREATE INDEX incident_reported_at_idx ON incident (reported_at);
CREATE INDEX incident_status_idx ON incident (status);

CREATE TABLE incident_event (
    id          bigserial PRIMARY KEY,
    incident_id bigint NOT NULL REFERENCES incident (id) ON DELETE CASCADE,
    at          timestamptz NOT NULL DEFAULT now(),
    actor       text NOT NULL,
    action      text NOT NULL,
    from_status text,
    to_status   text,
    note        text,
    data        jsonb
);
CREATE INDEX incident_event_incident_idx ON incident_event (incident_id, at);

-- Address gazetteer: the places an address text can resolve to, with no network geocoder.
CREATE TABLE address (
    id           bigserial PRIMARY KEY,
    full_text    text NOT NULL,
    components   jsonb NOT NULL DEFAULT '{}'::jsonb,
    village_code varchar(12) REFERENCES admin_area (code),
    precision    text NOT NULL
                 CHECK (precision IN ('house_number', 'road', 'village', 'township', 'county')),
    geom         geometry(Point, 4326) NOT NULL
);
CREATE INDEX address_geom_idx ON address USING gist (geom);
CREATE INDEX address_village_idx ON address (village_code);
CREATE INDEX address_full_text_trgm_idx ON address USING gin (full_text gin_trgm_ops);
"""

DOWNGRADE = """
DROP TABLE IF EXISTS address;
DROP TABLE IF EXISTS incident_event;
DROP TABLE IF EXISTS incident;
DROP TABLE IF EXISTS incident_category;
DROP TABLE IF EXISTS coverage;
DROP TABLE IF EXISTS camera_fov;
DROP TABLE IF EXISTS key_place;
DROP TABLE IF EXISTS road;
"""


def upgrade() -> None:
    op.execute(UPGRADE)


def downgrade() -> None:
    op.execute(DOWNGRADE)
