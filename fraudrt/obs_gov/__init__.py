"""Obs/Gov: the run reporter, environment conformance and the governance log (seed step 11)."""

from . import governance
from .governance import FAMILIES, GovernanceError, GovernanceEvent, GovernanceView, record

__all__ = ["FAMILIES", "GovernanceError", "GovernanceEvent", "GovernanceView", "governance", "record"]
