-- Scenario Runner authority state (control_ingress §5.5). The ledger itself lives in S3.

-- A run equivalence key names exactly one scenario run and one intent (world, scenario, mode, window).
CREATE TABLE IF NOT EXISTS sr_run_equivalence (
    run_equivalence_key TEXT PRIMARY KEY,
    scenario_run_id     TEXT NOT NULL,
    intent_fingerprint  TEXT NOT NULL,
    intent              JSONB NOT NULL,
    first_seen_at       TIMESTAMPTZ NOT NULL DEFAULT now(),
    last_seen_at        TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- One row per scenario run activated in a platform run: READY committed, then published (re-emits counted).
CREATE TABLE IF NOT EXISTS sr_runs (
    platform_run_id      TEXT NOT NULL,
    scenario_run_id      TEXT NOT NULL,
    run_equivalence_key  TEXT NOT NULL REFERENCES sr_run_equivalence (run_equivalence_key),
    state                TEXT NOT NULL,
    message_id           TEXT NOT NULL,
    facts_view_ref       TEXT NOT NULL,
    ready_ref            TEXT NOT NULL,
    publish_count        INT NOT NULL DEFAULT 0,
    last_shard_id        TEXT,
    last_sequence_number TEXT,
    committed_at         TIMESTAMPTZ NOT NULL DEFAULT now(),
    published_at         TIMESTAMPTZ,
    PRIMARY KEY (platform_run_id, scenario_run_id)
);
