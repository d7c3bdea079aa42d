-- The Decision Log/Audit index. The audit records themselves are the object-store segments; these
-- tables say which chain each record joined, where its line is, and what each chain's verdict is.

-- One row per accepted decision-lane record (by event id): its chain, its content hash (a later copy
-- with another hash is a MISMATCH anomaly, never an overwrite) and its segment line.
CREATE TABLE IF NOT EXISTS dla_links (
    platform_run_id   TEXT NOT NULL,
    event_id          TEXT NOT NULL,
    event_type        TEXT NOT NULL,
    decision_id       TEXT NOT NULL,
    action_id         TEXT,
    content_hash      TEXT NOT NULL,
    segment_ref       TEXT NOT NULL,
    stream            TEXT NOT NULL,
    shard_id          TEXT NOT NULL,
    sequence_number   TEXT NOT NULL,
    PRIMARY KEY (platform_run_id, event_id)
);
CREATE INDEX IF NOT EXISTS dla_links_decision ON dla_links (platform_run_id, decision_id);

-- One row per decision chain: what it holds, its status (PENDING inside its grace period, RESOLVED
-- once whole, UNRESOLVED when the grace period ended first) and the reasons it is not whole.
CREATE TABLE IF NOT EXISTS dla_chains (
    platform_run_id     TEXT NOT NULL,
    decision_id         TEXT NOT NULL,
    status              TEXT NOT NULL CHECK (status IN ('PENDING', 'RESOLVED', 'UNRESOLVED')),
    source_event_id     TEXT NOT NULL,
    action              TEXT NOT NULL,
    admitted_at_utc     TEXT NOT NULL,
    decided_at_utc      TEXT NOT NULL,
    decision_event_id   TEXT,
    decision_ref        TEXT,
    intent_ids          TEXT[] NOT NULL,
    intent_event_ids    TEXT[] NOT NULL,
    outcome_action_ids  TEXT[] NOT NULL,
    outcome_ids         TEXT[] NOT NULL,
    outcome_statuses    TEXT[] NOT NULL,
    reasons             TEXT[] NOT NULL,
    pins                TEXT NOT NULL,        -- the run pins (JSON) its audit records carry
    first_seen_at       TIMESTAMPTZ NOT NULL,
    unresolved_at       TIMESTAMPTZ,          -- when its grace period ended with the chain incomplete
    resolved_at         TIMESTAMPTZ,
    PRIMARY KEY (platform_run_id, decision_id)
);
-- The unresolved list of the reconciliation artifact at start-up, never a scan of the run.
CREATE INDEX IF NOT EXISTS dla_chains_unresolved ON dla_chains (platform_run_id, unresolved_at)
    WHERE status = 'UNRESOLVED';

-- Records kept on record but not in a chain: changed copies of held events (MISMATCH) and links
-- that conflict with what a chain holds (DECISION_/INTENT_/OUTCOME_CONFLICT, LINK_AFTER_RESOLUTION).
CREATE TABLE IF NOT EXISTS dla_anomalies (
    platform_run_id   TEXT NOT NULL,
    stream            TEXT NOT NULL,
    shard_id          TEXT NOT NULL,
    sequence_number   TEXT NOT NULL,
    kind              TEXT NOT NULL,
    event_id          TEXT NOT NULL,
    decision_id       TEXT,
    detail            TEXT NOT NULL,
    segment_ref       TEXT,
    created_at        TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (platform_run_id, stream, shard_id, sequence_number, kind)
);

CREATE TABLE IF NOT EXISTS dla_run_counters (
    platform_run_id   TEXT NOT NULL,
    name              TEXT NOT NULL,
    value             BIGINT NOT NULL,
    PRIMARY KEY (platform_run_id, name)
);
