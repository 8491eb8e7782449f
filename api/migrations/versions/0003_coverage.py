"""Coverage as planners read it: grid area, road and place gaps, H3 cells, FOV versions.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-29
"""

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

UPGRADE = """
ALTER TABLE coverage
    ADD COLUMN area_m2 double precision NOT NULL DEFAULT 0 CHECK (area_m2 >= 0),
    ADD COLUMN gap_area_m2 double precision NOT NULL DEFAULT 0 CHECK (gap_area_m2 >= 0),
    ADD COLUMN road_gap_m geometry(MultiLineString, 4546),
    ADD COLUMN uncovered_place_ids bigint[] NOT NULL DEFAULT '{}';
CREATE INDEX coverage_level_idx ON coverage (level);

-- The camera version a FOV was built from: a recompute rebuilds only stale FOVs.
ALTER TABLE camera_fov ADD COLUMN camera_version integer NOT NULL DEFAULT 0;
CREATE INDEX coverage_gap_m_idx ON coverage USING gist (gap_m);

-- Share of each H3 resolution-9 cell (~0.1 km²) that cameras cover, for heat maps.
-- Cells no FOV touches are left out (their share is 0).
CREATE TABLE coverage_h3 (
    h3         text NOT NULL,
    level      text NOT NULL CHECK (level IN ('detect', 'observe', 'recognize', 'identify')),
    covered_fraction double precision NOT NULL CHECK (covered_fraction BETWEEN 0 AND 1),
    covered_m2 double precision NOT NULL CHECK (covered_m2 >= 0),
    geom       geometry(Polygon, 4326) NOT NULL,
    PRIMARY KEY (h3, level)
);
CREATE INDEX coverage_h3_geom_idx ON coverage_h3 USING gist (geom);
"""

DOWNGRADE = """
DROP TABLE IF EXISTS coverage_h3;
DROP INDEX IF EXISTS coverage_level_idx;
DROP INDEX IF EXISTS coverage_gap_m_idx;
ALTER TABLE camera_fov DROP COLUMN IF EXISTS camera_version;
ALTER TABLE coverage
    DROP COLUMN IF EXISTS uncovered_place_ids,
    DROP COLUMN IF EXISTS road_gap_m,
    DROP COLUMN IF EXISTS gap_area_m2,
    DROP COLUMN IF EXISTS area_m2;
"""


def upgrade() -> None:
    op.execute(UPGRADE)


def downgrade() -> None:
    op.execute(DOWNGRADE)
