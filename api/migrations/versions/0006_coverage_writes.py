"""Cheaper coverage writes: camera edits find their neighbours at once, recomputes store
gap polygons without compressing them.

- `camera_fov_detect_range_idx`: a camera edit recomputes the grids and H3 cells under
  the camera's old and new FOVs from every camera that reaches them, those standing
  within their own detect range; one GiST search finds the cameras within the *longest*
  detect range, read from this index instead of a scan of every FOV.
- Gap polygons (`coverage.gap_m`, `road_gap_m`) are stored uncompressed (`EXTERNAL`):
  arc vertices barely compress (pglz saved 12 % on the demo) while compressing them was
  a third of the database's work in a full recompute; PostGIS also reads the bounding
  box of an uncompressed value without fetching all of it.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01
"""

from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

UPGRADE = """
CREATE INDEX camera_fov_detect_range_idx ON camera_fov (range_m) WHERE level = 'detect';
ALTER TABLE coverage
    ALTER COLUMN gap_m SET STORAGE EXTERNAL,
    ALTER COLUMN road_gap_m SET STORAGE EXTERNAL;
"""

DOWNGRADE = """
ALTER TABLE coverage
    ALTER COLUMN gap_m SET STORAGE MAIN,
    ALTER COLUMN road_gap_m SET STORAGE MAIN;
DROP INDEX IF EXISTS camera_fov_detect_range_idx;
"""


def upgrade() -> None:
    op.execute(UPGRADE)


def downgrade() -> None:
    op.execute(DOWNGRADE)
