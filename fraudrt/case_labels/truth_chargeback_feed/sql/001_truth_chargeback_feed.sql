-- The simulated chargeback feed (reads truth; the only component of the case plane that does).

-- One row per selected flow: its label decided from truth, due when the world's clock reaches the
-- moment its source would know it (flow time + delay); `emitted_at` is set in the transaction that
-- writes its outbox row, so each flow's label leaves exactly once, and a re-read AUTH_REQUEST finds
-- its flow already here.
CREATE TABLE IF NOT EXISTS tcf_flows (
    platform_run_id  TEXT NOT NULL,
    flow_id          BIGINT NOT NULL,
    event_id         TEXT NOT NULL,
    event_time       TIMESTAMPTZ NOT NULL,
    due_time         TIMESTAMPTZ NOT NULL,
    label_value      TEXT NOT NULL,
    origin           TEXT NOT NULL,  -- "<shard>:<sequence>" of the AUTH_REQUEST on the traffic stream
    pins             JSONB NOT NULL,
    emitted_at       TIMESTAMPTZ,
    PRIMARY KEY (platform_run_id, flow_id)
);
CREATE INDEX IF NOT EXISTS tcf_flows_due ON tcf_flows (platform_run_id, due_time) WHERE emitted_at IS NULL;

-- The traffic stream's event-time watermark per shard (the largest ts_utc applied).
CREATE TABLE IF NOT EXISTS tcf_watermarks (
    platform_run_id  TEXT NOT NULL,
    shard_id         TEXT NOT NULL,
    ts               TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (platform_run_id, shard_id)
);
