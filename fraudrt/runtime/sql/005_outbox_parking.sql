-- The relay parks a row Kinesis will never take (too large, bad partition key, no such stream) with
-- its reason, so one such row cannot block the rest; it stays unpublished and visible in health.
ALTER TABLE rt_outbox ADD COLUMN IF NOT EXISTS parked_at TIMESTAMPTZ;
ALTER TABLE rt_outbox ADD COLUMN IF NOT EXISTS parked_reason TEXT;
-- The relay's query: an owner's oldest rows that are neither published nor parked.
CREATE INDEX IF NOT EXISTS rt_outbox_ready ON rt_outbox (owner, id) WHERE published_at IS NULL AND parked_at IS NULL;
DROP INDEX IF EXISTS rt_outbox_pending;
-- Parked rows are few; health counts them per owner.
CREATE INDEX IF NOT EXISTS rt_outbox_parked ON rt_outbox (owner, id) WHERE parked_at IS NOT NULL AND published_at IS NULL;
