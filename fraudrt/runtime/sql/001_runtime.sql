-- The actor runtime's own tables: checkpoints, publish outbox, dead letters.

CREATE TABLE IF NOT EXISTS rt_checkpoints (
    actor            TEXT NOT NULL,
    stream           TEXT NOT NULL,
    shard_id         TEXT NOT NULL,
    platform_run_id  TEXT NOT NULL,
    sequence_number  TEXT NOT NULL,
    records_total    BIGINT NOT NULL DEFAULT 0,
    updated_at       TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (actor, stream, shard_id, platform_run_id)
);

-- One row per envelope an actor emitted; published by the pack's relay, in id order per owner.
CREATE TABLE IF NOT EXISTS rt_outbox (
    id               BIGSERIAL PRIMARY KEY,
    owner            TEXT NOT NULL,
    stream           TEXT NOT NULL,
    partition_key    TEXT NOT NULL,
    event_id         TEXT NOT NULL,
    data             BYTEA NOT NULL,
    created_at       TIMESTAMPTZ NOT NULL DEFAULT now(),
    published_at     TIMESTAMPTZ,
    shard_id         TEXT,
    sequence_number  TEXT,
    attempts         INT NOT NULL DEFAULT 0,
    last_error       TEXT
);
-- The relay's only query: the oldest unpublished rows of one owner (stays small, so no full scans).
CREATE INDEX IF NOT EXISTS rt_outbox_pending ON rt_outbox (owner, id) WHERE published_at IS NULL;

CREATE TABLE IF NOT EXISTS rt_dead_letters (
    actor            TEXT NOT NULL,
    stream           TEXT NOT NULL,
    shard_id         TEXT NOT NULL,
    sequence_number  TEXT NOT NULL,
    platform_run_id  TEXT,
    event_id         TEXT,
    reason           TEXT NOT NULL,
    attempts         INT NOT NULL,
    data             BYTEA NOT NULL,
    created_at       TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (actor, stream, shard_id, sequence_number)
);
