"""CaseTrigger (`case_trigger`): decision-lane evidence that needs a person -> `case_trigger` events."""

from ._actor import CaseTrigger
from ._policy import Escalation, EscalationPolicy, LaneEvent, lane_decoder

__all__ = ["CaseTrigger", "Escalation", "EscalationPolicy", "LaneEvent", "lane_decoder"]
