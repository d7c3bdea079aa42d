"""Hypothesis strategies for input a producer would not think of, shared by IG's unit and HTTP tests.

`hostile_event(base)` starts from a valid envelope (a dict) and replaces envelope fields with any
JSON, nests a payload value far deeper than a decoder follows, pads it past Kinesis' 1 MiB record
limit, or throws it away for any JSON value; it returns JSON text.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from hypothesis import strategies as st

MIB = 1024 * 1024
ENVELOPE_FIELDS = ("event_id", "event_type", "schema_version", "ts_utc", "platform_run_id", "scenario_run_id",
                   "manifest_fingerprint", "parameter_hash", "seed", "scenario_id", "run_id", "producer",
                   "parent_event_id", "trace_id", "span_id", "emitted_at_utc", "payload")

# NUL and other controls, line/paragraph separators, a right-to-left override, a BOM, non-BMP
# characters, JSON's own punctuation, the batch packing's separators (U+001E/U+001F), long runs.
odd_text = st.one_of(
    st.text(max_size=30),
    st.text(alphabet=st.sampled_from("\u0000\u001f\u001e\u007f\u2028\u202e\ufeff\U0001f600é\\\"{}[],:"),
            max_size=30),
    st.builds(lambda c, n: c * n, st.sampled_from(["x", "\u0000", "é", "\U0001f600"]), st.integers(250, 3_000)),
)
scalars = st.one_of(st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70),
                    st.floats(allow_nan=False, allow_infinity=False), odd_text)
json_values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(odd_text, inner,
                                                                                               max_size=3),
                           max_leaves=10)


def nested(depth: int) -> str:
    """A JSON array `depth` levels deep, as text (json.dumps itself stops at ~1,000 levels)."""
    return "[" * depth + "1" + "]" * depth


@st.composite
def hostile_event(draw: st.DrawFn, base: Callable[[], dict[str, Any]]) -> str:
    env = base()
    shape = draw(st.sampled_from(["mutate", "mutate", "mutate", "deep", "huge", "valid", "any"]))
    if shape == "any":
        return json.dumps(draw(json_values))
    if shape == "mutate":
        for name in draw(st.lists(st.sampled_from(ENVELOPE_FIELDS), min_size=1, max_size=4, unique=True)):
            env[name] = draw(json_values)
    if shape == "huge" and isinstance(env.get("payload"), dict):
        env["payload"]["note"] = "y" * draw(st.sampled_from([MIB - 2_000, MIB + 1, 2 * MIB]))
    text = json.dumps(env)
    if shape == "deep":
        text = text[:-1] + ', "deep": ' + nested(draw(st.sampled_from([50, 800, 990, 1_010, 5_000, 50_000]))) + "}"
    return text
