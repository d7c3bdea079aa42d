"""Scenario Runner: verify a sealed oracle world, commit the run ledger write-once, publish READY.

Ledger (write-once, conditional PUT + compare): ``s3://fraud-platform/<platform_run_id>/sr/``
``run_plan/<scenario_run_id>.json``, ``run_facts_view/<scenario_run_id>.json``,
``ready_signal/<scenario_run_id>.json``. READY travels on ``sr-control-bus`` as a ``ControlMessage``.
"""

from ._errors import LedgerDrift, ScenarioRunnerError
from ._messages import (
    CONTROL_TOPIC,
    ControlAttributes,
    ControlMessage,
    OraclePackRef,
    PartRef,
    PolicyRev,
    ReadyPayload,
    RunFactsView,
    RunPins,
    RunPlan,
    StreamViewLocator,
    decode_control_message,
    encode_message,
)
from ._oracle import engine_root, normalise_engine_root, outputs_for_mode
from ._runner import COMPONENT, SQL_PACKAGE, ReadyRequest, ReadyResult, sr_ready

__all__ = [
    "COMPONENT",
    "CONTROL_TOPIC",
    "SQL_PACKAGE",
    "ControlAttributes",
    "ControlMessage",
    "LedgerDrift",
    "OraclePackRef",
    "PartRef",
    "PolicyRev",
    "ReadyPayload",
    "ReadyRequest",
    "ReadyResult",
    "RunFactsView",
    "RunPins",
    "RunPlan",
    "ScenarioRunnerError",
    "StreamViewLocator",
    "decode_control_message",
    "encode_message",
    "engine_root",
    "normalise_engine_root",
    "outputs_for_mode",
    "sr_ready",
]
