-- ADMIT receipts are indexed by their admission row, not by a second row in ig_receipts: the
-- settle statement already writes receipt_id, receipt_ref and the eb_ref there, and the extra
-- insert (a heap tuple and three index entries per event) was ~half of Postgres's CPU per
-- admitted event. ig_receipts keeps DUPLICATE and QUARANTINE receipts (and ADMIT rows written
-- before this migration); lookups read both.
ALTER TABLE ig_admissions ADD COLUMN IF NOT EXISTS receipt_batch_id TEXT;
CREATE INDEX IF NOT EXISTS ig_admissions_receipt_id ON ig_admissions (receipt_id) WHERE receipt_id IS NOT NULL;
