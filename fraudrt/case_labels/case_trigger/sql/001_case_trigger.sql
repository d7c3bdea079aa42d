-- CaseTrigger. Only this package reads or writes these tables.

-- Every trigger emitted, once: the replay ledger (a re-read decision derives the same trigger id;
-- same hash = duplicate, nothing emitted; another hash = a recorded mismatch, nothing emitted).
CREATE TABLE IF NOT EXISTS ct_triggers (
    platform_run_id  TEXT NOT NULL,
    case_trigger_id  TEXT NOT NULL,
    payload_hash     TEXT NOT NULL,
    case_id          TEXT NOT NULL,
    trigger_type     TEXT NOT NULL,
    source_ref_id    TEXT NOT NULL,
    created_at       TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (platform_run_id, case_trigger_id)
);

-- Entity subjects only (case_subject != flow): each decision's case subject, so that a failed
-- action or an unresolved audit of that decision joins the same case after a restart too
-- (the reference kept this map in process memory: critique #4).
CREATE TABLE IF NOT EXISTS ct_decision_subjects (
    platform_run_id  TEXT NOT NULL,
    decision_id      TEXT NOT NULL,
    event_class      TEXT NOT NULL,
    event_id         TEXT NOT NULL,
    PRIMARY KEY (platform_run_id, decision_id)
);
