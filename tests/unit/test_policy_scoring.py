"""The policy's pure parts: canonical bundles, scoring that does not depend on the batch, rules, bands."""

from __future__ import annotations

from pathlib import Path

import msgspec
import numpy as np
import pytest

from fraudrt.rtdl.policy import (
    GROUPS,
    BundleError,
    InputColumns,
    canonical_bytes,
    decide,
    load_bundle,
    load_policy,
    needed_inputs,
    parse_bundle,
    score_model,
)

pytestmark = pytest.mark.unit


def _model() -> object:
    return load_bundle(load_policy().bundle_path("model"))


def _random_inputs(names: list[str], n: int, seed: int) -> InputColumns:
    rng = np.random.default_rng(seed)
    cols = {}
    for name in names:
        if name.startswith("graph.device_new") or name.startswith("graph.ip_new") or name == "binding.is_virtual":
            cols[name] = rng.integers(0, 2, n).astype(np.float64)
        elif name == "request.amount_minor":
            cols[name] = rng.integers(50, 200_000, n).astype(np.float64)
        else:
            cols[name] = rng.integers(0, 40, n).astype(np.float64)
    return InputColumns(n, cols)


def test_a_flows_score_does_not_depend_on_the_other_flows_of_its_batch() -> None:
    loaded = _model()
    bundle = loaded.bundle  # type: ignore[attr-defined]
    names = needed_inputs(bundle, GROUPS)
    cols = _random_inputs(names, 997, seed=1)
    whole = score_model(bundle.models[0], cols).scores
    for size in (1, 2, 3, 7, 16, 33):
        parts = [score_model(bundle.models[0], cols.take(range(i, min(i + size, cols.n)))).scores
                 for i in range(0, cols.n, size)]
        assert np.array_equal(np.concatenate(parts), whole)  # bit for bit
    assert np.all(whole == np.round(whole, 6)) and whole.min() >= 0 and whole.max() <= 1


def test_rules_raise_the_action_and_a_rule_missing_an_input_is_not_evaluated() -> None:
    rules = load_bundle(load_policy().bundle_path("rules_only")).bundle
    names = needed_inputs(rules, GROUPS, use_model=False)
    base = {n: 0.0 for n in names}
    rows = [
        {**base, "request.amount_minor": 150.0, "velocity.device_5m_count": 6.0,
         "velocity.device_7d_amount_max_minor": 250.0},  # card testing burst
        {**base, "request.amount_minor": 5000.0, "graph.device_party_count_24h": 3.0},  # shared device
        {**base, "request.amount_minor": 2_500_000.0},  # over the limit
        {**base, "request.amount_minor": 5000.0, "graph.device_party_count_24h": 1.0},  # nothing
    ]
    cols = InputColumns.from_rows(names, [[r[n] for n in names] for r in rows])
    verdicts = decide(rules, cols, groups=GROUPS, use_model=False)
    assert [(v.action, v.rules_fired) for v in verdicts] == [
        ("DECLINE", ["CARD_TESTING_BURST"]), ("REVIEW", ["DEVICE_SHARED_BY_PARTIES"]),
        ("DECLINE", ["AMOUNT_LIMIT"]), ("APPROVE", [])]
    assert all(v.score is None for v in verdicts)
    # Without the velocity and graph groups only the request/binding rules can fire.
    narrow = needed_inputs(rules, ("request", "binding"), use_model=False)
    cols = InputColumns.from_rows(narrow, [[r[n] for n in narrow] for r in rows])
    assert [v.action for v in decide(rules, cols, groups=("request", "binding"), use_model=False)] == [
        "APPROVE", "APPROVE", "DECLINE", "APPROVE"]
    # A floor (the deadline's safe default) is never lowered; a forced action overrides everything.
    assert {v.action for v in decide(rules, cols, groups=("request", "binding"), use_model=False,
                                     floor_action="STEP_UP")} == {"STEP_UP", "DECLINE"}
    assert {v.action for v in decide(rules, cols, groups=(), use_model=False, forced_action="REVIEW")} == {"REVIEW"}


def test_score_bands_follow_the_thresholds_and_reasons_name_the_top_features() -> None:
    bundle = _model().bundle  # type: ignore[attr-defined]
    names = needed_inputs(bundle, GROUPS)
    cols = _random_inputs(names, 3000, seed=2)
    t = bundle.models[0].thresholds
    for v in decide(bundle, cols, groups=GROUPS, use_model=True):
        assert v.model == "full" and v.score is not None
        band = ("DECLINE" if v.score >= t.DECLINE else "REVIEW" if v.score >= t.REVIEW
                else "STEP_UP" if v.score >= t.STEP_UP else "APPROVE")
        assert f"SCORE_BAND:{band}" in v.reason_codes
        assert len(v.top_features) <= 3 and all(c > 0 for _, _, c in v.top_features)
        assert [f"FEATURE:{n}" for n, _, _ in v.top_features] == [r for r in v.reason_codes if r.startswith("FEATURE:")]
    # Without graph features the next model decides.
    no_graph = tuple(g for g in GROUPS if g != "graph")
    cols = _random_inputs(needed_inputs(bundle, no_graph), 10, seed=3)
    assert {v.model for v in decide(bundle, cols, groups=no_graph, use_model=True)} == {"no_graph"}


def test_a_bundle_is_its_canonical_bytes(tmp_path: Path) -> None:
    path = load_policy().bundle_path("model")
    data = path.read_bytes()
    loaded = parse_bundle(data)
    assert canonical_bytes(loaded.bundle) == data
    # The same content written another way is refused: a digest always names the bytes that decided.
    pretty = msgspec.json.format(data, indent=4)
    with pytest.raises(BundleError, match="not in canonical form"):
        parse_bundle(pretty)
    # An edited weight is another bundle (another digest), and a broken one is refused with the reason.
    doc = msgspec.json.decode(data)
    doc["models"][0]["weights"][0] = 9.0
    other = parse_bundle(canonical_bytes(msgspec.convert(doc, type(loaded.bundle))))
    assert other.digest != loaded.digest
    doc["models"][0]["weights"] = doc["models"][0]["weights"][:-1]
    with pytest.raises(BundleError, match="weights for"):
        parse_bundle(canonical_bytes(msgspec.convert(doc, type(loaded.bundle))))
