"""The pins of a decoded envelope: everything the plane emits carries its source event's pins."""

from __future__ import annotations

from typing import Any, Final

from fraudrt.contracts import Pins

_REQUIRED: Final = ("platform_run_id", "scenario_run_id", "manifest_fingerprint", "parameter_hash", "seed",
                    "scenario_id")


def envelope_pins(event: Any) -> Pins:
    """Validated pins from an envelope struct's fields (ValueError names what is missing or malformed)."""
    missing = [k for k in _REQUIRED if getattr(event, k, None) is None]
    if missing:
        raise ValueError(f"pins missing: {', '.join(missing)}")
    fields = {k: getattr(event, k) for k in _REQUIRED}
    run_id = getattr(event, "run_id", None)
    if run_id is not None:
        fields["run_id"] = run_id
    return Pins.from_mapping(fields)
