-- World Stream Producer state: READYs seen (dedupe + work queue) and per-output stream checkpoints.

-- One row per READY message_id ever recorded: a READY seen again (bus history, SR re-emit) is a duplicate.
CREATE TABLE IF NOT EXISTS wsp_ready_runs (
    message_id              TEXT PRIMARY KEY,
    platform_run_id         TEXT NOT NULL,
    scenario_run_id         TEXT NOT NULL,
    facts_view_ref          TEXT NOT NULL,
    ready                   JSONB NOT NULL,
    status                  TEXT NOT NULL DEFAULT 'PENDING',  -- PENDING | STREAMING | STREAMED | FAILED
    reason                  TEXT,
    emitted                 JSONB,
    source_stream           TEXT,
    source_shard_id         TEXT,
    source_sequence_number  TEXT,
    received_at             TIMESTAMPTZ NOT NULL DEFAULT now(),
    started_at              TIMESTAMPTZ,
    finished_at             TIMESTAMPTZ,
    updated_at              TIMESTAMPTZ NOT NULL DEFAULT now()
);
-- The background loop's only query: this run's unfinished READYs, oldest first (a handful of rows).
CREATE INDEX IF NOT EXISTS wsp_ready_runs_open ON wsp_ready_runs (platform_run_id, received_at)
    WHERE status IN ('PENDING', 'STREAMING');

-- Resume point per (platform run, scenario run, output): the next row to read after a contiguous
-- prefix of `emitted` acknowledged events. Scoped by stream_view_id so a rebuilt view cannot be resumed.
CREATE TABLE IF NOT EXISTS wsp_checkpoints (
    platform_run_id  TEXT NOT NULL,
    scenario_run_id  TEXT NOT NULL,
    output_id        TEXT NOT NULL,
    oracle_pack_id   TEXT NOT NULL,
    stream_view_id   TEXT NOT NULL,
    part_index       INT NOT NULL,
    row_index        BIGINT NOT NULL,
    emitted          BIGINT NOT NULL,
    updated_at       TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (platform_run_id, scenario_run_id, output_id)
);
