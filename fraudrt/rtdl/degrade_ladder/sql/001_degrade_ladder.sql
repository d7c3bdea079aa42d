-- Degrade Ladder. Only this package writes these tables; the Decision Fabric reads the current
-- posture through `fraudrt.rtdl.degrade_ladder.reader`.

-- Every posture a run has been in, appended when the posture changes (never a row per tick), with
-- why (`reason`: the transition; `reasons`: every signal that was not fine) and the signal values
-- behind it. posture_seq numbers the changes of a run from 1 (the initial posture).
CREATE TABLE IF NOT EXISTS dl_posture_changes (
    platform_run_id TEXT NOT NULL,
    posture_seq     BIGINT NOT NULL,
    mode            TEXT NOT NULL CHECK (mode IN ('NORMAL', 'DEGRADED_1', 'DEGRADED_2', 'FAIL_CLOSED')),
    previous_mode   TEXT,
    reason          TEXT NOT NULL,
    reasons         TEXT[] NOT NULL,
    signals         JSONB NOT NULL,
    policy_digest   TEXT NOT NULL,
    decided_at      TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (platform_run_id, posture_seq)
);

-- Append-only means append-only: a change once written is evidence.
CREATE OR REPLACE FUNCTION dl_posture_changes_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'dl_posture_changes is append-only (% refused)', TG_OP;
END $$;
DROP TRIGGER IF EXISTS dl_posture_changes_append_only ON dl_posture_changes;
CREATE TRIGGER dl_posture_changes_append_only BEFORE UPDATE OR DELETE ON dl_posture_changes
    FOR EACH ROW EXECUTE FUNCTION dl_posture_changes_append_only();

-- One row per run, rewritten every tick: the ladder is alive (ticked_at), the posture it holds, what
-- the signals call for right now and the quiet period in progress (so a restart keeps it).
CREATE TABLE IF NOT EXISTS dl_heartbeat (
    platform_run_id TEXT PRIMARY KEY,
    posture_seq     BIGINT NOT NULL,
    mode            TEXT NOT NULL,
    baseline        TEXT NOT NULL,
    better_since    TIMESTAMPTZ,
    better_worst    TEXT,
    ticks           BIGINT NOT NULL,
    ticked_at       TIMESTAMPTZ NOT NULL
) WITH (fillfactor = 50);
