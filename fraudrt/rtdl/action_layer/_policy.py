"""The execution policy: which intents the Action Layer executes, and why it denies the others."""

from __future__ import annotations

from fraudrt.contracts import ActionIntentPayload

from ._config import PolicyConfig


class ExecutionPolicy:
    def __init__(self, config: PolicyConfig) -> None:
        self.posture = config.execution_posture
        self._allowed = frozenset(config.postures[config.execution_posture])
        self._principals = {origin: tuple(p) for origin, p in config.principals.items()}

    def deny_reason(self, intent: ActionIntentPayload) -> str | None:
        """None if the intent may be executed, else the DENIED outcome's reason code."""
        principals = self._principals.get(intent.origin)
        if principals is None:
            return f"ORIGIN_NOT_ALLOWED:{intent.origin}"
        if intent.actor_principal not in principals:
            return f"PRINCIPAL_NOT_ALLOWED:{intent.actor_principal}"
        if intent.action_kind not in self._allowed:
            return f"POSTURE_BLOCK:{self.posture}:{intent.action_kind}"
        return None
