-- As decision_fabric/sql/002: probes by (platform_run_id, ...) must not depend on how young the run
-- was when the table was last analyzed.
ALTER TABLE dl_posture_changes ALTER COLUMN platform_run_id SET STATISTICS 0;
