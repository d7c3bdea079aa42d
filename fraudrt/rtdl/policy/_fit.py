"""`fraudrt policy fit`: fit the bundle's logistic models on training worlds, choose their thresholds.

Inputs are the same feature definitions the platform serves online, computed offline with polars
(`offline_inputs`); labels are the training worlds' truth (`fraud_flag` on the flow anchors), which
only this offline job reads. The fit is deterministic: Newton's method (IRLS) on the L2-penalised
log-likelihood from zero weights, rows in flow-id order, a fixed number of iterations at most, and
the result rounded to 6 significant digits before thresholds are chosen with the rounded model (so
the written bundle, scored by `_scoring.py`, reproduces the training shares exactly).

Thresholds come from target shares of *legitimate* training flows per band (`targets`): the
REVIEW threshold is the lowest score at which at most `targets.REVIEW` of legitimate flows would be
held (DECLINE and STEP_UP likewise), i.e. the bands are set by the friction the business accepts,
not by the fraud rate of the training world.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

import msgspec
import numpy as np
import polars as pl
import yaml

from fraudrt.engine import output_paths, read_run_receipt, read_run_receipt_raw
from fraudrt.rtdl.online_feature_plane import load_definitions

from ._bundle import (
    SEVERITY,
    Model,
    ModelFeature,
    PolicyBundle,
    Rule,
    Thresholds,
    Training,
    TrainingWorld,
    expr_inputs,
    round6,
    validate,
)
from ._inputs import F64, definitions_digests, frame_columns, group_of, offline_inputs
from ._scoring import decide, feature_matrix, needed_inputs, score_model

_MAX_ITER: Final = 50
_BANDS: Final = ("STEP_UP", "REVIEW", "DECLINE")
_ANCHOR_OUTPUT: Final = {"fraud": "s3_flow_anchor_with_fraud_6B", "baseline": "s2_flow_anchor_baseline_6B"}


class FitError(ValueError):
    pass


class _Strict(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    pass


class FeatureSpec(_Strict, frozen=True, kw_only=True):
    name: str
    expr: Any


class ModelSpec(_Strict, frozen=True, kw_only=True):
    name: str
    # Another model of the spec whose features come first (so a richer model extends a leaner one).
    base: str | None = None
    features: tuple[FeatureSpec, ...]


class RuleSet(_Strict, frozen=True, kw_only=True):
    id: str
    version: str
    description: str = ""
    rules: tuple[Rule, ...]


class FitSpec(_Strict, frozen=True, kw_only=True):
    """`config/policy/model_spec.yaml`: what to fit (the data comes from `--world`)."""

    bundle_id: str
    version: str
    description: str = ""
    l2: float
    targets: dict[str, float]
    rules: str  # a rule set file, relative to the spec
    models: tuple[ModelSpec, ...]

    def features_of(self, model: ModelSpec) -> tuple[FeatureSpec, ...]:
        if model.base is None:
            return model.features
        base = next((m for m in self.models if m.name == model.base), None)
        if base is None or base is model:
            raise FitError(f"model {model.name}: unknown base {model.base!r}")
        return (*self.features_of(base), *model.features)


def load_yaml_struct(path: Path, kind: type[Any]) -> Any:
    try:
        return msgspec.convert(yaml.safe_load(path.read_text()), kind)
    except (OSError, yaml.YAMLError, msgspec.ValidationError) as exc:
        raise FitError(f"{path}: {exc}") from exc


def load_rule_set(path: Path | str) -> RuleSet:
    rule_set: RuleSet = load_yaml_struct(Path(path), RuleSet)
    return rule_set


def load_fit_spec(path: Path | str) -> FitSpec:
    spec: FitSpec = load_yaml_struct(Path(path), FitSpec)
    if set(spec.targets) != set(_BANDS) or not (spec.targets["DECLINE"] <= spec.targets["REVIEW"]
                                                 <= spec.targets["STEP_UP"] < 1):
        raise FitError(f"{path}: targets must give STEP_UP >= REVIEW >= DECLINE legit shares below 1")
    return spec


# ------------------------------------------------------------------------------------ data


def world_truth(engine_run_root: Path | str, mode: str = "fraud") -> pl.DataFrame:
    """flow_id, fraud_flag, campaign_type (legit for legitimate flows) of a world: the labels."""
    scenario = read_run_receipt_raw(Path(engine_run_root))["scenario_ids"][0]
    paths = output_paths(engine_run_root, _ANCHOR_OUTPUT[mode], scenario)
    truth = pl.concat([pl.read_parquet(p, columns=["flow_id", "fraud_flag", "campaign_id"]) for p in paths])
    return truth.select(pl.col("flow_id").cast(pl.Int64), pl.col("fraud_flag").cast(pl.Boolean),
                        pl.col("campaign_id").str.extract(r"^(.*)_\d+$").fill_null("legit").alias("campaign_type"))


def training_world(engine_run_root: Path | str, truth: pl.DataFrame) -> TrainingWorld:
    receipt = read_run_receipt(engine_run_root)
    scenario = str(read_run_receipt_raw(Path(engine_run_root))["scenario_ids"][0])
    return TrainingWorld(manifest_fingerprint=receipt.manifest_fingerprint, parameter_hash=receipt.parameter_hash,
                         seed=int(receipt.seed), scenario_id=scenario, flows=truth.height,
                         fraud_flows=int(truth["fraud_flag"].sum()))


def labelled_inputs(worlds: Sequence[Path | str], mode: str = "fraud") -> tuple[pl.DataFrame, list[TrainingWorld]]:
    """Every world's inputs joined to its labels, stacked in the order given (rows by flow id per world)."""
    frames, identities = [], []
    for root in worlds:
        truth = world_truth(root, mode)
        frames.append(offline_inputs(root, mode=mode).join(truth, on="flow_id", how="inner"))
        identities.append(training_world(root, truth))
    return pl.concat(frames), identities


# ------------------------------------------------------------------------------------ the fit


def _irls(x: F64, y: F64, l2: float) -> tuple[F64, float, F64, F64]:
    """Standardise, then Newton iterations; returns (weights, intercept, means, scales)."""
    means = x.mean(axis=0)
    scales = x.std(axis=0)
    scales[scales == 0] = 1.0
    means = np.array([round6(float(v)) for v in means])
    scales = np.array([round6(float(v)) for v in scales])
    z = np.column_stack([np.ones(len(x)), (x - means) / scales])
    w = np.zeros(z.shape[1])
    penalty = l2 * len(y) * np.diag(np.r_[0.0, np.ones(z.shape[1] - 1)])
    for _ in range(_MAX_ITER):
        p = 1.0 / (1.0 + np.exp(-(z @ w)))
        grad = z.T @ (p - y) + penalty @ w
        hess = (z * (p * (1.0 - p))[:, None]).T @ z + penalty
        step = np.linalg.solve(hess, grad)
        w = w - step
        if float(np.abs(step).max()) < 1e-10:
            break
    return w[1:], float(w[0]), means, scales


def _threshold(legit_scores: F64, share: float) -> float:
    """The lowest 6-decimal score at which at most `share` of legitimate flows score at or above it."""
    ordered = np.sort(legit_scores)[::-1]
    k = math.floor(share * len(ordered))
    if k >= len(ordered):
        return 0.0
    return min(1.0, round(float(ordered[k]) + 1e-6, 6))


def _model_groups(features: Sequence[FeatureSpec]) -> tuple[str, ...]:
    groups = {group_of(i) for f in features for i in expr_inputs(f.expr)}
    return tuple(g for g in ("request", "binding", "velocity", "graph") if g in groups)


def fit_model(name: str, features: Sequence[FeatureSpec], data: pl.DataFrame, l2: float,
              targets: dict[str, float]) -> Model:
    names = list(dict.fromkeys(i for f in features for i in expr_inputs(f.expr)))
    cols = frame_columns(data, names)
    unfitted = Model(name=name, groups=_model_groups(features),
                     features=tuple(ModelFeature(name=f.name, expr=f.expr) for f in features),
                     weights=tuple(0.0 for _ in features), intercept=0.0,
                     thresholds=Thresholds(STEP_UP=1.0, REVIEW=1.0, DECLINE=1.0))
    x = np.column_stack(feature_matrix(unfitted, cols))
    y = data["fraud_flag"].cast(pl.Float64).to_numpy()
    weights, intercept, means, scales = _irls(x, y, l2)
    model = msgspec.structs.replace(
        unfitted, intercept=round6(intercept), weights=tuple(round6(float(w)) for w in weights),
        features=tuple(ModelFeature(name=f.name, expr=f.expr, mean=float(m), scale=float(s))
                       for f, m, s in zip(features, means, scales, strict=True)))
    legit = score_model(model, cols).scores[y == 0]
    t = {band: _threshold(legit, targets[band]) for band in _BANDS}
    return msgspec.structs.replace(model, thresholds=Thresholds(
        STEP_UP=t["STEP_UP"], REVIEW=max(t["STEP_UP"], t["REVIEW"]),
        DECLINE=max(t["STEP_UP"], t["REVIEW"], t["DECLINE"])))


def action_shares(bundle: PolicyBundle, data: pl.DataFrame, groups: Sequence[str], use_model: bool) -> dict[str, float]:
    """Shares of legitimate and fraudulent flows per action (`legit.REVIEW`, `fraud.DECLINE`, ...)."""
    cols = frame_columns(data, needed_inputs(bundle, groups, use_model))
    actions = np.array([v.action for v in decide(bundle, cols, groups=groups, use_model=use_model)])
    fraud = data["fraud_flag"].to_numpy()
    out: dict[str, float] = {}
    for label, mask in (("legit", ~fraud), ("fraud", fraud)):
        total = max(1, int(mask.sum()))
        for action in SEVERITY:
            out[f"{label}.{action}"] = round6(float((actions[mask] == action).sum()) / total)
    return out


def fit_bundle(spec: FitSpec, spec_dir: Path, worlds: Sequence[Path | str], mode: str = "fraud") -> PolicyBundle:
    if not worlds:
        raise FitError("give at least one training world")
    data, identities = labelled_inputs(worlds, mode)
    if not data.height or not data["fraud_flag"].any() or data["fraud_flag"].all():
        raise FitError("the training worlds need both fraudulent and legitimate flows")
    rule_set = load_rule_set(spec_dir / spec.rules)
    models = tuple(fit_model(m.name, spec.features_of(m), data, spec.l2, spec.targets) for m in spec.models)
    bundle = PolicyBundle(bundle_id=spec.bundle_id, version=spec.version, description=spec.description,
                          feature_definitions=definitions_digests(load_definitions()), models=models,
                          rules=rule_set.rules)
    results = {m.name: action_shares(bundle, data, m.groups, use_model=True) for m in models}
    training = Training(worlds=tuple(identities), l2=spec.l2, targets=dict(sorted(spec.targets.items())),
                        results=results)
    bundle = msgspec.structs.replace(bundle, training=training)
    validate(bundle)
    return bundle


def rules_bundle(rule_set: RuleSet) -> PolicyBundle:
    """A bundle of rules only (no model): the fallback under DEGRADED_2 and the comparison baseline."""
    bundle = PolicyBundle(bundle_id=rule_set.id, version=rule_set.version, description=rule_set.description,
                          feature_definitions=definitions_digests(load_definitions()), rules=rule_set.rules)
    validate(bundle)
    return bundle

