-- Per-key probes must stay per-key whatever the statistics say. Analyzed while a run is young (or
-- while only another run's rows exist), platform_run_id's statistics estimate the current run at
-- ~1 row, and the planner then scans the run's whole prefix (another index, or a materialized scan
-- in a nested loop) for every key of a batch: measured at ~1 ms per key on a 20k-flow run, growing
-- with the run. Without statistics on the column, equality on it is estimated at the default 0.5%
-- of the table, and a probe on (platform_run_id, decision_id) always takes the primary key.
ALTER TABLE df_decisions ALTER COLUMN platform_run_id SET STATISTICS 0;
ALTER TABLE df_pending ALTER COLUMN platform_run_id SET STATISTICS 0;
