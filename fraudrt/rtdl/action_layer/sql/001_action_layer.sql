-- The Action Layer's ledger: one row per intent (its idempotency key) with its one outcome. It is
-- the dedupe (a copy of a known intent is never executed again), the retry state (a PENDING row
-- keeps its intent record and attempts until a retry timer finishes it) and the evidence of what
-- was executed, all written with the batch's checkpoint and outbox rows.
CREATE TABLE IF NOT EXISTS al_intents (
    platform_run_id   TEXT NOT NULL,
    idempotency_key   TEXT NOT NULL,
    intent_event_id   TEXT NOT NULL,
    content_hash      TEXT NOT NULL,
    action_id         TEXT NOT NULL,
    decision_id       TEXT NOT NULL,
    action_kind       TEXT NOT NULL,
    outcome_id        TEXT NOT NULL,
    status            TEXT NOT NULL CHECK (status IN ('PENDING', 'EXECUTED', 'FAILED', 'DENIED')),
    reason_code       TEXT,
    attempts          INT NOT NULL,
    attempts_doc      BYTEA NOT NULL,   -- the attempts so far, as the outcome lists them (JSON)
    provider_ref      TEXT,
    intent            BYTEA,            -- the intent record while PENDING (what a retry executes); NULL once done
    taken_in_at       TIMESTAMPTZ NOT NULL,
    completed_at_utc  TEXT,             -- the outcome's completed_at_utc
    PRIMARY KEY (platform_run_id, idempotency_key)
);
-- One intent event per key and one key per intent event: a second event claiming either is an anomaly.
CREATE UNIQUE INDEX IF NOT EXISTS al_intents_event ON al_intents (platform_run_id, intent_event_id);
-- Start-up reload of the intents in flight (the health's oldest-pending age), never a scan of the run.
CREATE INDEX IF NOT EXISTS al_intents_pending ON al_intents (platform_run_id, taken_in_at) WHERE status = 'PENDING';

-- Copies that are not the intent held for their key: a changed copy of a known intent event
-- (PAYLOAD_MISMATCH) or another event claiming a known key or event id (INTENT_CONFLICT). Recorded
-- where they were read; the held intent and its outcome are never touched.
CREATE TABLE IF NOT EXISTS al_anomalies (
    platform_run_id   TEXT NOT NULL,
    stream            TEXT NOT NULL,
    shard_id          TEXT NOT NULL,
    sequence_number   TEXT NOT NULL,
    kind              TEXT NOT NULL,
    event_id          TEXT NOT NULL,
    idempotency_key   TEXT NOT NULL,
    content_hash      TEXT NOT NULL,
    held_event_id     TEXT,
    held_hash         TEXT,
    created_at        TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (platform_run_id, stream, shard_id, sequence_number)
);

CREATE TABLE IF NOT EXISTS al_run_counters (
    platform_run_id   TEXT NOT NULL,
    name              TEXT NOT NULL,
    value             BIGINT NOT NULL,
    PRIMARY KEY (platform_run_id, name)
);
