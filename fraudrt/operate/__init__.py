"""Run/Operate: the Spine Green v0 closeout that drives the seed's run process end to end."""

from ._parity import ParityReport, ParityRequest, StepResult, run_parity

__all__ = ["ParityReport", "ParityRequest", "StepResult", "run_parity"]
