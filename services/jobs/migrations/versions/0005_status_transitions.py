"""job status moves only as the transition table allows; modality is a known value

Revision ID: 0005_status_transitions
Revises: 0004_leases_input_hash_charged
"""

from __future__ import annotations

from alembic import op

revision = "0005_status_transitions"
down_revision = "0004_leases_input_hash_charged"
branch_labels = None
depends_on = None

# A copy of services/common/job_states.py as it is at this revision (a migration
# never changes with the code): INITIAL and the status-changing pairs of
# TRANSITIONS. tests/jobs/test_store_transitions.py checks the two agree.
# Statuses themselves are checked since 0001 (status IN (...)).


def upgrade() -> None:
    op.execute(
        """
        ALTER TABLE jobs.jobs ADD CONSTRAINT jobs_modality_known
            CHECK (modality IN ('image', 'img2img', 'video', 'img2video', 'multimodal'));

        -- A job is born pending (or failed: an abandoned creation) and its status
        -- only moves forward; done and failed are final. Staying put (a resumed
        -- attempt keeps processing) is no move.
        CREATE FUNCTION jobs.job_status_transition_legal() RETURNS trigger
        LANGUAGE plpgsql AS $$
        BEGIN
            IF TG_OP = 'INSERT' THEN
                IF NEW.status NOT IN ('pending', 'failed') THEN
                    RAISE EXCEPTION 'illegal job status transition: a job % is not created %',
                        NEW.id, NEW.status USING ERRCODE = 'check_violation';
                END IF;
            ELSIF (OLD.status, NEW.status) NOT IN (
                ('pending', 'processing'),
                ('pending', 'done'),
                ('pending', 'failed'),
                ('processing', 'done'),
                ('processing', 'failed')
            ) THEN
                RAISE EXCEPTION 'illegal job status transition: job % from % to %',
                    OLD.id, OLD.status, NEW.status USING ERRCODE = 'check_violation';
            END IF;
            RETURN NEW;
        END
        $$;

        CREATE TRIGGER jobs_status_created_legal BEFORE INSERT ON jobs.jobs
            FOR EACH ROW EXECUTE FUNCTION jobs.job_status_transition_legal();
        CREATE TRIGGER jobs_status_moves_legal BEFORE UPDATE OF status ON jobs.jobs
            FOR EACH ROW WHEN (OLD.status IS DISTINCT FROM NEW.status)
            EXECUTE FUNCTION jobs.job_status_transition_legal();
        """
    )


def downgrade() -> None:
    op.execute(
        """
        DROP TRIGGER jobs_status_moves_legal ON jobs.jobs;
        DROP TRIGGER jobs_status_created_legal ON jobs.jobs;
        DROP FUNCTION jobs.job_status_transition_legal();
        ALTER TABLE jobs.jobs DROP CONSTRAINT jobs_modality_known;
        """
    )
