-- Decision Fabric. Only this package writes these tables; others read them through
-- `fraudrt.rtdl.decision_fabric.reader`.

-- One row per decided AUTH_REQUEST: the primary key is the deterministic decision id, so a second
-- copy of a traffic event (a re-publish, a replay) finds its decision and emits nothing. Written in
-- the same transaction as the decision's outbox rows and the checkpoint (or the timer) that led to it.
-- content_digest: the decision payload without its run-specific fields (contracts
-- df_decision_content_digest); source_hash: the traffic record's content hash, so a changed copy of
-- a decided event is told from a duplicate.
CREATE TABLE IF NOT EXISTS df_decisions (
    platform_run_id TEXT NOT NULL,
    decision_id     TEXT NOT NULL,
    source_event_id TEXT NOT NULL,
    flow_id         BIGINT NOT NULL,
    action          TEXT NOT NULL,
    score           DOUBLE PRECISION,
    context_status  TEXT NOT NULL,
    posture_mode    TEXT NOT NULL,
    model           TEXT,
    bundle_digest   TEXT NOT NULL,
    content_digest  TEXT NOT NULL,
    source_hash     TEXT NOT NULL,
    admitted_at     TIMESTAMPTZ NOT NULL,
    decided_at      TIMESTAMPTZ NOT NULL,
    waited_ms       DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (platform_run_id, decision_id)
);

-- AUTH_REQUESTs whose context was not complete when they arrived: kept (with the record itself) until
-- decided by a re-check or at their deadline, then deleted in the transaction that decides them.
CREATE TABLE IF NOT EXISTS df_pending (
    platform_run_id TEXT NOT NULL,
    decision_id     TEXT NOT NULL,
    flow_id         BIGINT NOT NULL,
    source_hash     TEXT NOT NULL,
    stream          TEXT NOT NULL,
    shard_id        TEXT NOT NULL,
    sequence_number TEXT NOT NULL,
    arrival_ts      DOUBLE PRECISION NOT NULL,
    first_seen      DOUBLE PRECISION NOT NULL,
    deadline_at     DOUBLE PRECISION NOT NULL,
    data            BYTEA NOT NULL,
    PRIMARY KEY (platform_run_id, decision_id)
);
CREATE INDEX IF NOT EXISTS df_pending_age ON df_pending (platform_run_id, first_seen);
