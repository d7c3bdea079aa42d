-- The frame index leads with the frame key, not the run: led by platform_run_id it was also a valid
-- path for the reader's per-flow probe (run prefix, then a filter on flow_id), and once the table's
-- statistics estimate the current run at ~1 row (analyzed while the run was young, or while only
-- another run's rows existed) the planner took it, scanning the run's bindings for every flow of a
-- batch (~1 ms per flow at 20k flows; tests/integration/test_reader_plans.py). Key first, it serves
-- only the frame lookups it exists for, and the flow probe has the primary key alone.
DROP INDEX IF EXISTS csfb_flow_bindings_by_frame;
CREATE INDEX IF NOT EXISTS csfb_flow_bindings_frame_key ON csfb_flow_bindings (merchant_id, arrival_seq, platform_run_id);
