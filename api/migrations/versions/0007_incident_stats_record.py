"""Incident statistics from one narrow index, and a change marker for cached answers.

`incident.stats_record` (generated, so every write keeps it and the rewrite of this
migration backfills it) packs what the statistics take of an incident into 28 bytes in
network byte order, the layout of `api.services.incident_stats.RECORD`:

- the grid code as an integer (-1: no grid); grid codes are 15 digits (now checked on
  the incident too, so the cast cannot fail), levels above are integer divisions;
- the status, numbered in the order of `api.services.incidents.STATES`;
- flags: 1 handled, 2 no return, 4 in a coverage gap, 8 gap unknown (`in_gap` null);
- seconds from report to close (date_part of the interval, as before), NaN unless
  closed or evaluated with a closing time;
- due_at in microseconds since 2000-01-01 UTC (timestamptz_send), +infinity when none:
  whether it has passed depends on the clock, so the reader compares.

`incident_stats_record_idx` covers the statistics' filters (reported_at, category) and
the record: they read 6 MB of index instead of evaluating expressions over 85 MB of rows.

Every statement that writes `incident`, `grid` or `admin_area` (what the statistics
count and name) adds one to a counter in the same transaction, so the sum of the
counters that a snapshot sees grows with every committed write: a statistics answer
computed in one snapshot stays exact for any later snapshot that sees the same sum
(readers pair the sum with the table's file node, so counters that start over — a
TRUNCATE, this migration run again — cannot meet an answer of before).

The counter is split over 256 rows, each writer bumping the row of its backend
(`pg_backend_pid() % 256`): concurrent intakes seldom wait for one another's commit (a
reader sums 256 small rows), and a transaction only ever locks one row, so two writers
cannot deadlock on them. Statement
triggers (not row triggers) keep a bulk import of 82,000 rows at one bump per statement.
Nothing to backfill: caches live in server processes and start empty.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-29
"""

from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

UPGRADE = """
ALTER TABLE incident ADD CONSTRAINT incident_grid_code_digits CHECK (grid_code ~ '^[0-9]{15}$');
ALTER TABLE incident ADD COLUMN stats_record bytea GENERATED ALWAYS AS (
    int8send(coalesce(grid_code::int8, -1))
    || int2send((CASE status
        WHEN 'evaluated' THEN 9 WHEN 'closed' THEN 8 WHEN 'reported' THEN 0
        WHEN 'accepted' THEN 1 WHEN 'rejected' THEN 2 WHEN 'dispatched' THEN 3
        WHEN 'in_progress' THEN 4 WHEN 'feedback' THEN 5 WHEN 'verified' THEN 6
        WHEN 'returned' THEN 7 END)::int2)
    || int2send((handled::int + (return_count = 0)::int * 2 + coalesce(in_gap, false)::int * 4
                 + (in_gap IS NULL)::int * 8)::int2)
    || float8send(CASE WHEN status IN ('closed', 'evaluated') AND closed_at IS NOT NULL
                  THEN date_part('epoch', closed_at - reported_at) ELSE 'NaN' END)
    || timestamptz_send(coalesce(due_at, 'infinity'))
) STORED;
CREATE INDEX incident_stats_record_idx ON incident (reported_at)
    INCLUDE (category, stats_record) WHERE deleted_at IS NULL;

CREATE TABLE incident_stats_marker (
    shard   smallint PRIMARY KEY,
    version bigint NOT NULL DEFAULT 0
);
INSERT INTO incident_stats_marker (shard) SELECT generate_series(0, 255);
CREATE FUNCTION bump_incident_stats_marker() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE incident_stats_marker SET version = version + 1
    WHERE shard = pg_backend_pid() % 256;
    RETURN NULL;
END $$;
CREATE TRIGGER incident_stats_marker AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE
    ON incident FOR EACH STATEMENT EXECUTE FUNCTION bump_incident_stats_marker();
CREATE TRIGGER incident_stats_marker AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE
    ON grid FOR EACH STATEMENT EXECUTE FUNCTION bump_incident_stats_marker();
CREATE TRIGGER incident_stats_marker AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE
    ON admin_area FOR EACH STATEMENT EXECUTE FUNCTION bump_incident_stats_marker();
"""

DOWNGRADE = """
DROP TRIGGER IF EXISTS incident_stats_marker ON admin_area;
DROP TRIGGER IF EXISTS incident_stats_marker ON grid;
DROP TRIGGER IF EXISTS incident_stats_marker ON incident;
DROP FUNCTION IF EXISTS bump_incident_stats_marker();
DROP TABLE IF EXISTS incident_stats_marker;
DROP INDEX IF EXISTS incident_stats_record_idx;
ALTER TABLE incident DROP COLUMN IF EXISTS stats_record;
ALTER TABLE incident DROP CONSTRAINT IF EXISTS incident_grid_code_digits;
"""


def upgrade() -> None:
    op.execute(UPGRADE)


def downgrade() -> None:
    op.execute(DOWNGRADE)
