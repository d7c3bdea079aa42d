-- The run reporter's state: additive counters per run (see fraudrt/obs_gov/_aggregate.py). A batch
-- adds to them in its transaction; a report reads the run's keys (O(keys), never O(events)).
CREATE TABLE IF NOT EXISTS obs_counts (
    platform_run_id TEXT NOT NULL,
    key             TEXT NOT NULL,
    value           BIGINT NOT NULL,
    PRIMARY KEY (platform_run_id, key)
);

-- Decisions folded in before the oracle's truth for the run could be read (normally none): scored
-- and deleted by the reporter's next round once it can.
CREATE TABLE IF NOT EXISTS obs_unscored (
    platform_run_id TEXT NOT NULL,
    decision_id     TEXT NOT NULL,
    flow_id         BIGINT NOT NULL,
    action          TEXT NOT NULL,
    PRIMARY KEY (platform_run_id, decision_id)
);
