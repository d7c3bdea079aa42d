-- Case Management. Only this package reads or writes these tables (the investigator API is part
-- of the package).

-- One row per case (one per subject: a flow, or an entity): the workflow state and what the queue
-- filters on, kept in step with the timeline in the same transaction as each timeline event. The
-- timeline is the record; this row is its projection (one read for the queue, no fold per query:
-- critique #15), and `version` is its optimistic-concurrency token. Event times are the world's
-- clock, created/updated/resolved_at the platform's.
CREATE TABLE IF NOT EXISTS cm_cases (
    platform_run_id   TEXT NOT NULL,
    case_id           TEXT NOT NULL,
    subject_class     TEXT NOT NULL,
    subject_id        TEXT NOT NULL,
    pins              JSONB NOT NULL,
    state             TEXT NOT NULL DEFAULT 'OPEN' CHECK (state IN ('OPEN', 'IN_REVIEW', 'RESOLVED')),
    assignee          TEXT,
    resolution        TEXT,
    version           BIGINT NOT NULL DEFAULT 1,
    last_seq          INT NOT NULL DEFAULT 0,
    trigger_count     INT NOT NULL DEFAULT 0,
    trigger_types     TEXT[] NOT NULL DEFAULT '{}',
    actions           TEXT[] NOT NULL DEFAULT '{}',
    max_score         DOUBLE PRECISION,
    first_event_time  TIMESTAMPTZ NOT NULL,
    last_event_time   TIMESTAMPTZ NOT NULL,
    created_at        TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at        TIMESTAMPTZ NOT NULL DEFAULT now(),
    resolved_at       TIMESTAMPTZ,
    PRIMARY KEY (platform_run_id, case_id)
);
-- The queue: newest first, optionally by state (keyset pagination on (created_at, case_id)).
CREATE INDEX IF NOT EXISTS cm_cases_queue ON cm_cases (platform_run_id, created_at DESC, case_id DESC);
CREATE INDEX IF NOT EXISTS cm_cases_state_queue ON cm_cases (platform_run_id, state, created_at DESC, case_id DESC);

-- Trigger intake ledger: each case trigger once (same id + same hash = duplicate; another hash =
-- a recorded mismatch), with its payload: the decision's reasons and features for the API.
CREATE TABLE IF NOT EXISTS cm_triggers (
    platform_run_id  TEXT NOT NULL,
    case_trigger_id  TEXT NOT NULL,
    payload_hash     TEXT NOT NULL,
    case_id          TEXT NOT NULL,
    trigger          JSONB NOT NULL,
    received_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (platform_run_id, case_trigger_id)
);
CREATE INDEX IF NOT EXISTS cm_triggers_case ON cm_triggers (platform_run_id, case_id);

-- The append-only timeline: per case a gap-free sequence (assigned under the case row's lock, so
-- two writers never tie: critique #9), the world's time of the evidence (event_time, NULL for a
-- person's action) apart from when it was observed and when it was recorded.
CREATE TABLE IF NOT EXISTS cm_timeline (
    platform_run_id    TEXT NOT NULL,
    case_id            TEXT NOT NULL,
    seq                INT NOT NULL,
    timeline_event_id  TEXT NOT NULL,
    event_type         TEXT NOT NULL,
    source_ref_id      TEXT NOT NULL,
    actor_id           TEXT NOT NULL,
    source_type        TEXT NOT NULL,
    event_time         TIMESTAMPTZ,
    observed_time      TIMESTAMPTZ NOT NULL,
    recorded_at        TIMESTAMPTZ NOT NULL DEFAULT now(),
    payload            JSONB NOT NULL,
    payload_hash       TEXT NOT NULL,
    PRIMARY KEY (platform_run_id, case_id, seq),
    UNIQUE (platform_run_id, timeline_event_id)
);

DROP TRIGGER IF EXISTS cm_timeline_append_only ON cm_timeline;
CREATE TRIGGER cm_timeline_append_only BEFORE UPDATE OR DELETE ON cm_timeline
    FOR EACH ROW EXECUTE FUNCTION cl_append_only();
