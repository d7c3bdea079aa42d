-- Counters of the case + labels plane's components, per run: written in each batch's transaction
-- (so a rolled-back batch counts nothing and a restart starts from what was committed).
CREATE TABLE IF NOT EXISTS cl_run_counters (
    component        TEXT NOT NULL,
    platform_run_id  TEXT NOT NULL,
    counter          TEXT NOT NULL,
    value            BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (component, platform_run_id, counter)
);

-- Changed copies of known ids (a trigger, a timeline event, a label assertion whose id is known
-- with another payload hash): recorded here, never applied, never overwriting the original.
CREATE TABLE IF NOT EXISTS cl_mismatches (
    component        TEXT NOT NULL,
    platform_run_id  TEXT NOT NULL,
    kind             TEXT NOT NULL,
    id               TEXT NOT NULL,
    stored_hash      TEXT,
    seen_hash        TEXT NOT NULL,
    payload          JSONB,
    seen_at          TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (component, platform_run_id, id, seen_hash)
);

-- The plane's records of what happened (case timelines, label assertions) are append-only: a
-- correction is a new row. Tables that are get this trigger function.
CREATE OR REPLACE FUNCTION cl_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% is append-only (% refused)', TG_TABLE_NAME, TG_OP;
END $$;
