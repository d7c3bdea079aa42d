-- Idempotent intake (DESIGN §10): the event ids each component has taken in for a run, with the
-- hash of what it took, so a re-published event is a no-op and a changed one is a recorded mismatch.
CREATE TABLE IF NOT EXISTS rt_inbox (
    component        TEXT NOT NULL,
    platform_run_id  TEXT NOT NULL,
    event_id         TEXT NOT NULL,
    payload_hash     TEXT NOT NULL,
    first_seen_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (component, platform_run_id, event_id)
);

-- Same event id, other content: never applied, never overwriting the original; kept with its source.
CREATE TABLE IF NOT EXISTS rt_inbox_mismatches (
    component        TEXT NOT NULL,
    platform_run_id  TEXT NOT NULL,
    event_id         TEXT NOT NULL,
    stored_hash      TEXT,
    seen_hash        TEXT NOT NULL,
    stream           TEXT NOT NULL,
    shard_id         TEXT NOT NULL,
    sequence_number  TEXT NOT NULL,
    seen_at          TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (component, platform_run_id, event_id, seen_hash)
);
