"""Degrade Ladder (DL): the platform's posture, NORMAL -> DEGRADED_1 -> DEGRADED_2 -> FAIL_CLOSED.

Public surface: the service (`DegradeLadder`, in the decision lane pack), the typed reader
(`current_posture`, `posture_history`: the only way other components read DL state), the pure ladder
step (`baseline`, `step`) and `set_posture` (an operator's override). What each posture allows and
what moves the ladder is the decision policy (`fraudrt.rtdl.policy.load_policy`).
"""

from . import reader
from ._ladder import Baseline, LadderState, Step, Verdict, baseline, step
from ._service import DegradeLadder
from ._signals import BundleCheck, Report, projector_verdict, read_report
from ._store import set_posture
from .reader import NOTIFY_CHANNEL, Posture, PostureChange, current_posture, posture_history

__all__ = [
    "NOTIFY_CHANNEL",
    "Baseline",
    "BundleCheck",
    "DegradeLadder",
    "LadderState",
    "Posture",
    "PostureChange",
    "Report",
    "Step",
    "Verdict",
    "baseline",
    "current_posture",
    "posture_history",
    "projector_verdict",
    "read_report",
    "reader",
    "set_posture",
    "step",
]
