"""The audit log refuses every UPDATE, DELETE and TRUNCATE, saying so plainly.

0001's row-level trigger let a statement that matched no row through (`DELETE FROM
audit_log WHERE false` succeeded) and its message did not say what was refused. One
statement-level trigger now refuses all three operations whatever they match, naming
the operation; the error stays a plain RAISE EXCEPTION (SQLSTATE P0001).

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01
"""

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

UPGRADE = """
CREATE OR REPLACE FUNCTION audit_log_is_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_log is append-only: % refused', TG_OP
        USING HINT = 'The audit log keeps every write for good; record a new entry instead.';
END $$;
DROP TRIGGER audit_log_no_update ON audit_log;
DROP TRIGGER audit_log_no_truncate ON audit_log;
CREATE TRIGGER audit_log_append_only BEFORE UPDATE OR DELETE OR TRUNCATE ON audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION audit_log_is_append_only();
"""

DOWNGRADE = """
DROP TRIGGER audit_log_append_only ON audit_log;
CREATE OR REPLACE FUNCTION audit_log_is_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_log is append-only';
END $$;
CREATE TRIGGER audit_log_no_update BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION audit_log_is_append_only();
CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION audit_log_is_append_only();
"""


def upgrade() -> None:
    op.execute(UPGRADE)


def downgrade() -> None:
    op.execute(DOWNGRADE)
