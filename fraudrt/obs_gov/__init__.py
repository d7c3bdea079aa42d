"""Obs/Gov (seed step 11, pack `local_parity_obs_gov_v0`): the run reporter, environment conformance
and the governance log.

- `platform_run_reporter`: `runs/fraud-platform/<run>/obs/platform_run_report.{json,html}`
  (`one_shot_report` for `fraudrt report`).
- `environment_conformance`: `obs/environment_conformance.json` (`run_conformance`).
- `governance`: `record(...)` for any component, `query(...)`, `GovernanceView` (compaction).
"""

from . import governance
from ._conformance import CHECK_IDS, Check, Conformance, ConformanceReport
from ._gather import report_paths
from ._truth import Truth, load_truth, truth_from_frame
from .environment_conformance import EnvironmentConformance, conformance_path, run_conformance
from .governance import FAMILIES, GovernanceError, GovernanceEvent, GovernanceView, record
from .platform_run_reporter import PlatformRunReporter, one_shot_report

__all__ = [
    "CHECK_IDS",
    "FAMILIES",
    "Check",
    "Conformance",
    "ConformanceReport",
    "EnvironmentConformance",
    "GovernanceError",
    "GovernanceEvent",
    "GovernanceView",
    "PlatformRunReporter",
    "Truth",
    "conformance_path",
    "governance",
    "load_truth",
    "one_shot_report",
    "record",
    "report_paths",
    "run_conformance",
    "truth_from_frame",
]
