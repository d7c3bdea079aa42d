"""Decision Fabric (DF): decides every AUTH_REQUEST of the run exactly once.

Public surface: the actor (`DecisionFabric`, in the decision lane pack), the typed reader of its
decisions (`decisions_for`, `decisions_digest`, `pending_for`) and its health thresholds. The policy
it decides with (bundles, scoring, quality) is `fraudrt.rtdl.policy`; the posture it obeys comes from
`fraudrt.rtdl.degrade_ladder`.
"""

from . import reader
from ._actor import DecisionFabric
from ._health import Thresholds
from .reader import DecisionRecord, decisions_digest, decisions_for, pending_for

__all__ = ["DecisionFabric", "DecisionRecord", "Thresholds", "decisions_digest", "decisions_for", "pending_for",
           "reader"]
