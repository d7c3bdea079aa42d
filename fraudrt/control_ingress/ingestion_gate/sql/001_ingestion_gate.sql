-- IG state: admissions (idempotency + admission truth), the ops index of receipts, quarantines.

-- One row per (platform_run_id, event_class, event_id). Written PUBLISH_PENDING (with the envelope)
-- BEFORE publishing; turned ADMITTED with the eb_ref (and the envelope dropped) after publish and
-- receipt. A PUBLISH_PENDING row whose claim is older than the heal lease is re-published: there is
-- no third, ambiguous state.
CREATE TABLE IF NOT EXISTS ig_admissions (
    dedupe_key            TEXT PRIMARY KEY,
    platform_run_id       TEXT NOT NULL,
    event_class           TEXT NOT NULL,
    event_id              TEXT NOT NULL,
    event_type            TEXT NOT NULL,
    payload_hash          TEXT NOT NULL,
    state                 TEXT NOT NULL CHECK (state IN ('PUBLISH_PENDING', 'ADMITTED')),
    stream                TEXT NOT NULL,
    partition_key         TEXT NOT NULL,
    profile_id            TEXT NOT NULL,
    data                  BYTEA,
    claim_token           TEXT NOT NULL,
    claimed_by            TEXT NOT NULL,
    claimed_at            TIMESTAMPTZ NOT NULL DEFAULT now(),
    publish_attempts      INT NOT NULL DEFAULT 0,
    eb_topic              TEXT,
    eb_partition          INT,
    eb_offset             TEXT,
    eb_published_at_utc   TEXT,
    admitted_at_utc       TEXT,
    receipt_id            TEXT,
    receipt_ref           TEXT,
    duplicate_receipt_ref TEXT,
    created_at            TIMESTAMPTZ NOT NULL DEFAULT now()
);
-- The heal loop's only query: pending rows by claim age (stays tiny, so no scan grows with the run).
CREATE INDEX IF NOT EXISTS ig_admissions_pending ON ig_admissions (claimed_at) WHERE state = 'PUBLISH_PENDING';

-- Ops index: every receipt written (ADMIT, DUPLICATE, QUARANTINE), keyed by run + receipt id.
CREATE TABLE IF NOT EXISTS ig_receipts (
    platform_run_id TEXT NOT NULL,
    receipt_id      TEXT NOT NULL,
    decision        TEXT NOT NULL,
    event_id        TEXT,
    event_type      TEXT,
    event_class     TEXT,
    dedupe_key      TEXT,
    reason_codes    TEXT[] NOT NULL DEFAULT '{}',
    eb_topic        TEXT,
    eb_partition    INT,
    eb_offset       TEXT,
    receipt_ref     TEXT NOT NULL,
    batch_id        TEXT,
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (platform_run_id, receipt_id)
);
CREATE INDEX IF NOT EXISTS ig_receipts_event_id ON ig_receipts (event_id);
CREATE INDEX IF NOT EXISTS ig_receipts_receipt_id ON ig_receipts (receipt_id);

CREATE TABLE IF NOT EXISTS ig_quarantines (
    platform_run_id TEXT NOT NULL,
    quarantine_id   TEXT NOT NULL,
    event_id        TEXT,
    event_type      TEXT,
    reason_code     TEXT NOT NULL,
    detail          TEXT NOT NULL,
    record_ref      TEXT NOT NULL,
    receipt_id      TEXT NOT NULL,
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (platform_run_id, quarantine_id)
);
CREATE INDEX IF NOT EXISTS ig_quarantines_event_id ON ig_quarantines (event_id);
