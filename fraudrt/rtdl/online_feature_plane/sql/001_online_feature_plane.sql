-- Online Feature Plane (issue 11). One row per flow of the run: its two halves (the AUTH_REQUEST's
-- time and amount, the flow anchor's entities) as they are taken in, then its feature vector once
-- the flow is aggregated. The rows are also the changelog the in-memory buckets are rebuilt from
-- on start, so no bucket table is written per event. No ground truth is stored (none is decoded).
CREATE TABLE IF NOT EXISTS ofp_flows (
    platform_run_id     TEXT NOT NULL,
    flow_id             BIGINT NOT NULL,
    request_event_id    TEXT,            -- NULL: the AUTH_REQUEST half has not been taken in
    ts_us               BIGINT,          -- the AUTH_REQUEST's event time, µs since the epoch
    amount_minor        BIGINT,
    anchor_event_id     TEXT,            -- NULL: the flow anchor half has not been taken in
    anchor_ts_us        BIGINT,
    merchant_id         NUMERIC(20, 0),  -- UInt64 in the engine catalogue
    party_id            BIGINT,
    account_id          BIGINT,
    instrument_id       BIGINT,
    device_id           BIGINT,
    ip_id               BIGINT,
    vector              BYTEA,           -- NULL until aggregated: little-endian int64 per feature
    exact               BOOLEAN,         -- false: computed after out-of-order input (see architecture.md)
    definitions_digest  TEXT,
    PRIMARY KEY (platform_run_id, flow_id)
) WITH (fillfactor = 90);  -- room for the HOT update that completes a half written by an earlier batch

-- The event-time watermark applied per shard (the largest ts taken in), restored on start.
CREATE TABLE IF NOT EXISTS ofp_watermarks (
    platform_run_id  TEXT NOT NULL,
    stream           TEXT NOT NULL,
    shard_id         TEXT NOT NULL,
    ts_us            BIGINT NOT NULL,
    PRIMARY KEY (platform_run_id, stream, shard_id)
);

-- Counters that must survive a restart, one row per run (updated with every batch).
CREATE TABLE IF NOT EXISTS ofp_progress (
    platform_run_id       TEXT PRIMARY KEY,
    flows_aggregated      BIGINT NOT NULL DEFAULT 0,
    flows_inexact         BIGINT NOT NULL DEFAULT 0,
    dead_letters          BIGINT NOT NULL DEFAULT 0,
    release_watermark_us  BIGINT,
    updated_at            TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- Every definitions document a vector was computed with, by digest (names resolve from here).
CREATE TABLE IF NOT EXISTS ofp_definitions (
    digest          TEXT PRIMARY KEY,
    feature_set     TEXT NOT NULL,
    version         INT NOT NULL,
    names           TEXT[] NOT NULL,
    first_used_at   TIMESTAMPTZ NOT NULL DEFAULT now()
);
