"""Scoring: a bundle, what a posture allows and a batch of input columns -> one verdict per flow.

The only scoring code: the Decision Fabric calls it online on each batch of flows, `policy fit`
chooses thresholds with it and the quality evaluation replays whole worlds through it, so what is
measured offline is what decides online. Pure numpy, no model library at decision time.

Every operation is element-wise over the batch (the linear predictor is a sum over features in
bundle order, not a matrix product), so a flow's score does not depend on which other flows share
its batch: the same inputs give the same bits online and offline. Scores are rounded to 6 decimal
places before the thresholds are applied, so the recorded score alone explains the action.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import numpy as np

from fraudrt.contracts import ACTIONS

from ._bundle import SEVERITY, Model, PolicyBundle, Rule, expr_inputs
from ._inputs import F64, InputColumns, group_of

TOP_FEATURES: Final = 3
_CMP: Final = {">=": np.greater_equal, ">": np.greater, "<": np.less, "<=": np.less_equal, "==": np.equal}


def evaluate_expr(expr: Any, cols: InputColumns) -> F64:
    if isinstance(expr, str):
        return cols[expr]
    op, args = expr[0], expr[1:]
    if op == "value":
        return evaluate_expr(args[0], cols)
    if op == "log1p":
        return np.log1p(np.maximum(evaluate_expr(args[0], cols), 0.0))
    if op == "ge":
        return (evaluate_expr(args[0], cols) >= float(args[1])).astype(np.float64)
    if op == "lt":
        return (evaluate_expr(args[0], cols) < float(args[1])).astype(np.float64)
    if op == "mul":
        out = evaluate_expr(args[0], cols)
        for arg in args[1:]:
            out = out * evaluate_expr(arg, cols)
        return out
    raise ValueError(f"unknown expression operator {op!r}")


def needed_inputs(bundle: PolicyBundle, groups: Iterable[str], use_model: bool = True) -> list[str]:
    """The raw inputs (sorted) a bundle can read within `groups`: its models' (if used) and its rules'."""
    allowed = set(groups)
    names = {i for m in bundle.models for f in m.features for i in expr_inputs(f.expr)} if use_model else set()
    names |= {i for r in bundle.rules for i in r.inputs}
    return sorted(n for n in names if group_of(n) in allowed)


def feature_matrix(model: Model, cols: InputColumns) -> list[F64]:
    """The model's derived features (unstandardised), one column each, in bundle order."""
    return [evaluate_expr(f.expr, cols) for f in model.features]


@dataclass(frozen=True, slots=True)
class ModelScores:
    scores: F64  # probability of fraud, rounded to 6 decimals
    values: list[F64]  # derived feature values
    contributions: list[F64]  # w_j * z_j per feature: its part in the log-odds, relative to the mean


def score_model(model: Model, cols: InputColumns) -> ModelScores:
    values = feature_matrix(model, cols)
    linear = np.full(cols.n, model.intercept, dtype=np.float64)
    contributions = []
    for feature, weight, x in zip(model.features, model.weights, values, strict=True):
        c = weight * ((x - feature.mean) / feature.scale)
        contributions.append(c)
        linear = linear + c
    scores = np.round(1.0 / (1.0 + np.exp(-linear)), 6)
    return ModelScores(scores, values, contributions)


def score_actions(model: Model, scores: F64) -> list[str]:
    t = model.thresholds
    codes = ((scores >= t.STEP_UP).astype(np.int64) + (scores >= t.REVIEW).astype(np.int64)
             + (scores >= t.DECLINE).astype(np.int64))
    return [ACTIONS[c] for c in codes.tolist()]


def fire_rules(rules: Iterable[Rule], cols: InputColumns) -> list[tuple[Rule, np.ndarray[Any, np.dtype[np.bool_]]]]:
    """Each evaluable rule with the flows it fires on (rules reading an absent input are left out)."""
    out = []
    for rule in rules:
        if not all(i in cols for i in rule.inputs):
            continue
        fired = np.ones(cols.n, dtype=np.bool_)
        for cond in rule.when:
            fired &= _CMP[cond.op](cols[cond.input], cond.value)
        out.append((rule, fired))
    return out


@dataclass(slots=True)
class Verdict:
    """What the policy decided for one flow."""

    action: str
    score: float | None
    model: str | None
    rules_fired: list[str] = field(default_factory=list)
    # (derived feature name, its value, its contribution to the log-odds), largest contribution first.
    top_features: list[tuple[str, float, float]] = field(default_factory=list)
    reason_codes: list[str] = field(default_factory=list)


def choose_model(bundle: PolicyBundle, groups: Iterable[str]) -> Model | None:
    """The first (most capable) model whose input groups are all allowed."""
    allowed = set(groups)
    return next((m for m in bundle.models if set(m.groups) <= allowed), None)


def decide(bundle: PolicyBundle, cols: InputColumns, *, groups: Sequence[str], use_model: bool,
           floor_action: str = "APPROVE", forced_action: str | None = None) -> list[Verdict]:
    """One verdict per row of `cols`: model band (if a model is allowed and fits the groups), raised by
    every fired rule and by `floor_action`; `forced_action` overrides all (FAIL_CLOSED)."""
    n = cols.n
    if forced_action is not None:
        return [Verdict(forced_action, None, None, reason_codes=[f"FORCED:{forced_action}"]) for _ in range(n)]
    allowed = set(groups)
    model = choose_model(bundle, allowed) if use_model else None
    verdicts = [Verdict(floor_action, None, None) for _ in range(n)]
    if model is not None:
        ms = score_model(model, cols)
        actions = score_actions(model, ms.scores)
        contrib = np.column_stack(ms.contributions) if ms.contributions else np.zeros((n, 0))
        values = np.column_stack(ms.values) if ms.values else np.zeros((n, 0))
        order = np.argsort(-contrib, axis=1, kind="stable")[:, :TOP_FEATURES] if n else np.zeros((0, 0), np.int64)
        names = [f.name for f in model.features]
        for i, v in enumerate(verdicts):
            v.model = model.name
            v.score = float(ms.scores[i])
            v.top_features = [(names[j], float(values[i, j]), round(float(contrib[i, j]), 6))
                              for j in order[i].tolist() if contrib[i, j] > 0]
            if SEVERITY[actions[i]] > SEVERITY[v.action]:
                v.action = actions[i]
            v.reason_codes.append(f"SCORE_BAND:{actions[i]}")
    usable = [r for r in bundle.rules if r.groups <= allowed]
    for rule, fired in fire_rules(usable, cols):
        for i in np.flatnonzero(fired).tolist():
            v = verdicts[i]
            v.rules_fired.append(rule.id)
            v.reason_codes.append(f"RULE:{rule.id}")
            if SEVERITY[rule.action] > SEVERITY[v.action]:
                v.action = rule.action
    for v in verdicts:
        v.reason_codes.extend(f"FEATURE:{name}" for name, _, _ in v.top_features)
        if not v.reason_codes:
            v.reason_codes.append(f"DEFAULT:{v.action}")
    return verdicts
