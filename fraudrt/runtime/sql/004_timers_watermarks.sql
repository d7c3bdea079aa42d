-- Durable timers (DESIGN §10): written in a batch transaction, fired by the runtime in a later one
-- (`Actor.on_timer`), deleted in the transaction that fires them, so a crash neither loses nor
-- doubles a deadline.
CREATE TABLE IF NOT EXISTS rt_timers (
    component        TEXT NOT NULL,
    platform_run_id  TEXT NOT NULL,
    timer_key        TEXT NOT NULL,
    due_at           TIMESTAMPTZ NOT NULL,
    payload          BYTEA NOT NULL DEFAULT '\x'::bytea,
    created_at       TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (component, platform_run_id, timer_key)
);
CREATE INDEX IF NOT EXISTS rt_timers_due ON rt_timers (component, platform_run_id, due_at);

-- The event-time watermark a checkpoint reflects: the latest `ts_utc` among the records committed
-- on that shard (canonical RFC 3339 with 6 fractional digits, so text order is time order).
ALTER TABLE rt_checkpoints ADD COLUMN IF NOT EXISTS watermark_ts TEXT;
