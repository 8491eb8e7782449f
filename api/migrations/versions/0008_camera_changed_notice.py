"""Every write to `camera` announces the cameras it changed, for in-memory indexes.

Server processes keep the working cameras in memory to answer `GET /v1/cameras/visible`
(`api.services.camera_sights`). Statement triggers NOTIFY `gridcover_camera_changed`
with the ids a statement inserted, updated or deleted, comma-separated, or `*` when it
touched more than 200 cameras or truncated the table (read everything again). PostgreSQL
delivers notices only when the transaction commits, and drops them on a rollback, so
every writer (the API, the CLI, SQL by hand) reaches every server process within
milliseconds and nothing uncommitted ever does.

Statement triggers with transition tables, not row triggers: an import of 50,000 cameras
sends one `*` instead of 50,000 notices.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-29
"""

from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

UPGRADE = """
CREATE FUNCTION announce_changed_cameras() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    ids text;
BEGIN
    IF TG_OP = 'TRUNCATE' THEN
        ids := '*';
    ELSE
        SELECT CASE WHEN count(*) > 200 THEN '*' ELSE string_agg(id::text, ',') END
        INTO ids FROM (SELECT id FROM changed_cameras LIMIT 201) AS first_ids;
    END IF;
    IF ids IS NOT NULL THEN
        PERFORM pg_notify('gridcover_camera_changed', ids);
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER camera_inserted_notice AFTER INSERT ON camera
    REFERENCING NEW TABLE AS changed_cameras
    FOR EACH STATEMENT EXECUTE FUNCTION announce_changed_cameras();
CREATE TRIGGER camera_updated_notice AFTER UPDATE ON camera
    REFERENCING NEW TABLE AS changed_cameras
    FOR EACH STATEMENT EXECUTE FUNCTION announce_changed_cameras();
CREATE TRIGGER camera_deleted_notice AFTER DELETE ON camera
    REFERENCING OLD TABLE AS changed_cameras
    FOR EACH STATEMENT EXECUTE FUNCTION announce_changed_cameras();
CREATE TRIGGER camera_truncated_notice AFTER TRUNCATE ON camera
    FOR EACH STATEMENT EXECUTE FUNCTION announce_changed_cameras();
"""

DOWNGRADE = """
DROP TRIGGER IF EXISTS camera_truncated_notice ON camera;
DROP TRIGGER IF EXISTS camera_deleted_notice ON camera;
DROP TRIGGER IF EXISTS camera_updated_notice ON camera;
DROP TRIGGER IF EXISTS camera_inserted_notice ON camera;
DROP FUNCTION IF EXISTS announce_changed_cameras();
"""


def upgrade() -> None:
    op.execute(UPGRADE)


def downgrade() -> None:
    op.execute(DOWNGRADE)
