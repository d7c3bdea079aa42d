-- Tables of the test-only actors in tests/support/actors.py (never part of a real deployment).

-- Every record a Recorder handled, in commit order; no unique key, so a re-handled record shows twice.
CREATE TABLE IF NOT EXISTS test_handled (
    id               BIGSERIAL PRIMARY KEY,
    actor            TEXT NOT NULL,
    platform_run_id  TEXT NOT NULL,
    stream           TEXT NOT NULL,
    shard_id         TEXT NOT NULL,
    sequence_number  TEXT NOT NULL,
    event_id         TEXT
);
CREATE INDEX IF NOT EXISTS test_handled_run ON test_handled (platform_run_id, id);

-- The downstream consumer's state in the outbox crash test: one row per event, duplicates harmless.
CREATE TABLE IF NOT EXISTS test_sink (
    platform_run_id  TEXT NOT NULL,
    event_id         TEXT NOT NULL,
    stream           TEXT NOT NULL,
    shard_id         TEXT NOT NULL,
    sequence_number  TEXT NOT NULL,
    PRIMARY KEY (platform_run_id, event_id)
);
