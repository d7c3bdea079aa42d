-- Label Store. Only this package writes these tables; others read through
-- `fraudrt.case_labels.label_store.reader`.

-- Every label assertion accepted, append-only (a correction is a new assertion, never an update).
-- `training_eligible` is false for AUTO assertions (the platform's own guess is never training
-- truth: critique #6). observed_time: when the source knew it; effective_time: when it is true of
-- the world; committed_at: when the store took it.
CREATE TABLE IF NOT EXISTS ls_label_assertions (
    platform_run_id         TEXT NOT NULL,
    label_assertion_id      TEXT NOT NULL,
    payload_hash            TEXT NOT NULL,
    event_id                TEXT NOT NULL,
    label_type              TEXT NOT NULL,
    label_value             TEXT NOT NULL,
    source_type             TEXT NOT NULL CHECK (source_type IN ('HUMAN', 'EXTERNAL', 'AUTO')),
    actor_id                TEXT,
    effective_time          TIMESTAMPTZ NOT NULL,
    observed_time           TIMESTAMPTZ NOT NULL,
    training_eligible       BOOLEAN NOT NULL,
    case_id                 TEXT,
    case_timeline_event_id  TEXT NOT NULL,
    assertion               JSONB NOT NULL,
    committed_at            TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (platform_run_id, label_assertion_id)
);
-- As-of reads: one subject's assertions of one type up to a time.
CREATE INDEX IF NOT EXISTS ls_label_assertions_subject
    ON ls_label_assertions (platform_run_id, event_id, label_type, observed_time);

DROP TRIGGER IF EXISTS ls_label_assertions_append_only ON ls_label_assertions;
CREATE TRIGGER ls_label_assertions_append_only BEFORE UPDATE OR DELETE ON ls_label_assertions
    FOR EACH ROW EXECUTE FUNCTION cl_append_only();
