"""Incidents at work: the flags the statistics count, and the indexes of queues and stats.

- `in_gap`: the location is in no detect-level camera FOV (NULL: not known, i.e. no FOVs
  computed yet, or no location); set at intake and by `refresh_incident_gaps`;
- `handled`: the incident reached `feedback` once (调处: handled), kept through returns;
- `return_count`: how many times verification sent it back (success needs none);
- `reporter`: contact details a citizen gave (Open311), personal data;
- `updated_at`: the time of its last event or edit.

`incident_stats_idx` (reported_at, covering the columns the statistics read, live rows)
supersedes 0002's plain indexes on reported_at and status, which are dropped: each index
costs every intake and every bulk row (duplicate hints use 0002's gist on location,
overdue lists the covering index).

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-30
"""

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

UPGRADE = """
ALTER TABLE incident
    ADD COLUMN in_gap boolean,
    ADD COLUMN handled boolean NOT NULL DEFAULT false,
    ADD COLUMN return_count integer NOT NULL DEFAULT 0 CHECK (return_count >= 0),
    ADD COLUMN reporter jsonb,
    ADD COLUMN updated_at timestamptz;

UPDATE incident SET
    handled = status IN ('feedback', 'verified', 'returned', 'closed', 'evaluated'),
    return_count = (SELECT count(*) FROM incident_event e
                    WHERE e.incident_id = incident.id AND e.action = 'return'),
    updated_at = coalesce((SELECT max(e.at) FROM incident_event e
                           WHERE e.incident_id = incident.id), reported_at);
UPDATE incident i SET in_gap = NOT EXISTS (
    SELECT 1 FROM camera_fov f WHERE f.level = 'detect'
    AND ST_Intersects(f.geom_m, ST_Transform(i.location, 4546)))
WHERE i.location IS NOT NULL AND EXISTS (SELECT 1 FROM camera_fov WHERE level = 'detect');
ALTER TABLE incident ALTER COLUMN updated_at SET DEFAULT now();
ALTER TABLE incident ALTER COLUMN updated_at SET NOT NULL;

-- Grid, village, township and county filters are prefixes of the grid code.
CREATE INDEX incident_grid_code_idx ON incident (grid_code varchar_pattern_ops);
-- The unassigned queue.
CREATE INDEX incident_unassigned_idx ON incident (reported_at)
    WHERE grid_id IS NULL AND deleted_at IS NULL;
-- Statistics read only these columns: an index-only scan instead of the wide rows.
CREATE INDEX incident_stats_idx ON incident (reported_at)
    INCLUDE (grid_code, status, handled, return_count, due_at, closed_at, in_gap, category)
    WHERE deleted_at IS NULL;
DROP INDEX incident_reported_at_idx;
DROP INDEX incident_status_idx;
"""

DOWNGRADE = """
CREATE INDEX IF NOT EXISTS incident_reported_at_idx ON incident (reported_at);
CREATE INDEX IF NOT EXISTS incident_status_idx ON incident (status);
DROP INDEX IF EXISTS incident_stats_idx;
DROP INDEX IF EXISTS incident_unassigned_idx;
DROP INDEX IF EXISTS incident_grid_code_idx;
ALTER TABLE incident
    DROP COLUMN IF EXISTS updated_at,
    DROP COLUMN IF EXISTS reporter,
    DROP COLUMN IF EXISTS return_count,
    DROP COLUMN IF EXISTS handled,
    DROP COLUMN IF EXISTS in_gap;
"""


def upgrade() -> None:
    op.execute(UPGRADE)


def downgrade() -> None:
    op.execute(DOWNGRADE)
