-- Settling an admission (PUBLISH_PENDING -> ADMITTED) is a HOT update: it changes no indexed
-- column, and the page keeps room for the new version, so Postgres writes no index entry and the
-- new version lands beside the old one (which page pruning reclaims). Two things made it non-HOT:
--   * the heal loop's partial index on state (a predicate column counts as indexed): pending
--     claims are now found through ig_claims, one row per claim (a push's batch), not per event;
--   * receipt_id set at settle: it is written at claim time now (a function of the event id).
-- Non-HOT, each settle wrote a second heap tuple and two index entries per event, and the
-- table's footprint doubled; Postgres's CPU per admitted event rose as the table outgrew memory.
CREATE TABLE IF NOT EXISTS ig_claims (
    claim_token TEXT PRIMARY KEY,
    claimed_by  TEXT NOT NULL,
    claimed_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    -- The admissions this claim inserted or took over; a key may also sit in an older claim that
    -- lost it (the heal checks each row's own claim before taking it). Read only by the heal:
    -- stored out of line uncompressed (compressing ~45 KB of hex per push cost more than it saved).
    dedupe_keys TEXT[] NOT NULL,
    -- cardinality(dedupe_keys), so that releasing a claim does not read the array back.
    keys_total  INT NOT NULL
);
ALTER TABLE ig_claims ALTER COLUMN dedupe_keys SET STORAGE EXTERNAL;
CREATE INDEX IF NOT EXISTS ig_claims_claimed_at ON ig_claims (claimed_at);

INSERT INTO ig_claims (claim_token, claimed_by, claimed_at, dedupe_keys, keys_total)
SELECT claim_token, min(claimed_by), min(claimed_at), array_agg(dedupe_key), count(*)
  FROM ig_admissions WHERE state = 'PUBLISH_PENDING' GROUP BY claim_token
    ON CONFLICT (claim_token) DO NOTHING;

DROP INDEX IF EXISTS ig_admissions_pending;
-- Room on each page for the settled version of its rows (~40% of a claimed row's size).
ALTER TABLE ig_admissions SET (fillfactor = 70);
