-- One row per archive segment object, committed with the ArchiveWriter's checkpoint.
CREATE TABLE IF NOT EXISTS archive_segments (
    platform_run_id  TEXT NOT NULL,
    stream           TEXT NOT NULL,
    shard_id         TEXT NOT NULL,
    first_sequence   TEXT NOT NULL,
    last_sequence    TEXT NOT NULL,
    record_count     INT NOT NULL,
    object_key       TEXT NOT NULL,
    sha256           TEXT NOT NULL,
    bytes            INT NOT NULL,
    created_at       TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (platform_run_id, stream, shard_id, first_sequence)
);
