"""The policy bundle: rules, scoring models, thresholds; versioned and content-addressed.

A bundle is one JSON document (`fraudrt.policy_bundle.v1`) written in canonical form: keys sorted,
two-space indent, ASCII, one trailing newline, every float rounded to 6 significant digits before it
is written (so the bytes do not depend on the last bits a BLAS happened to produce). The file's
sha256 *is* the bundle's digest, recorded on every decision; `load_bundle` refuses a file that is not
in canonical form, so a digest always names exactly the bytes that decided.

- `models`: logistic models over derived features, most capable first. Each feature is an
  expression over raw inputs (`_inputs.py`) with the mean and scale it is standardised with; a model
  needs every input group its features read, and the Decision Fabric runs the first model whose
  groups its posture allows (e.g. a model without graph features under DEGRADED_1). Thresholds map
  the probability to STEP_UP / REVIEW / DECLINE (below STEP_UP: APPROVE).
- `rules`: conjunctions of comparisons over raw inputs, each with an action; a fired rule raises the
  decision to at least its action. A rule whose inputs the posture does not allow is not evaluated.
- `feature_definitions`: the OFP and IEG definition digests the bundle was fitted on; a bundle is
  unusable against other definitions.
- `training`: which worlds the models were fitted on and what they reached there (no paths, no
  times: the same worlds give the same bytes).
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Any, Final, Literal

import msgspec

from fraudrt.contracts import ACTIONS, Action

from ._inputs import group_of, known_inputs

SCHEMA: Final = "fraudrt.policy_bundle.v1"
SEVERITY: Final = {a: i for i, a in enumerate(ACTIONS)}  # APPROVE 0 < STEP_UP < REVIEW < DECLINE
RuleKind = Literal["hard_block", "velocity_limit", "step_up", "heuristic"]
Op = Literal[">=", ">", "<", "<=", "=="]
# Expression operators over inputs: ["log1p", x], ["value", x], ["ge", x, c], ["lt", x, c], ["mul", e1, e2, ...].
EXPR_OPS: Final = frozenset({"log1p", "value", "ge", "lt", "mul"})


class BundleError(ValueError):
    """A bundle that cannot be used (unreadable, not canonical, inconsistent); the message says why."""


class _Strict(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    pass


class Condition(_Strict, frozen=True, kw_only=True):
    input: str
    op: Op
    value: float


class Rule(_Strict, frozen=True, kw_only=True):
    id: str
    kind: RuleKind
    action: Action
    description: str = ""
    when: tuple[Condition, ...]

    @property
    def inputs(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(c.input for c in self.when))

    @property
    def groups(self) -> frozenset[str]:
        return frozenset(group_of(i) for i in self.inputs)


class ModelFeature(_Strict, frozen=True, kw_only=True):
    name: str
    expr: Any  # a nested JSON list, see EXPR_OPS
    mean: float = 0.0
    scale: float = 1.0


class Thresholds(_Strict, frozen=True, kw_only=True):
    STEP_UP: float
    REVIEW: float
    DECLINE: float


class Model(_Strict, frozen=True, kw_only=True):
    name: str
    groups: tuple[str, ...]
    features: tuple[ModelFeature, ...]
    weights: tuple[float, ...]
    intercept: float
    thresholds: Thresholds


class TrainingWorld(_Strict, frozen=True, kw_only=True):
    manifest_fingerprint: str
    parameter_hash: str
    seed: int
    scenario_id: str
    flows: int
    fraud_flows: int


class Training(_Strict, frozen=True, kw_only=True):
    worlds: tuple[TrainingWorld, ...]
    l2: float
    targets: dict[str, float]
    # Per model, on the training worlds: legit and fraud shares per action.
    results: dict[str, dict[str, float]]


class PolicyBundle(_Strict, frozen=True, kw_only=True):
    schema: str = SCHEMA
    bundle_id: str
    version: str
    description: str = ""
    feature_definitions: dict[str, str]
    models: tuple[Model, ...] = ()
    rules: tuple[Rule, ...] = ()
    training: Training | None = None


class LoadedBundle(msgspec.Struct, frozen=True, kw_only=True):
    bundle: PolicyBundle
    digest: str
    path: str


def round6(x: float) -> float:
    """6 significant digits: what a bundle stores (and what `fit` scores with, so thresholds agree)."""
    if x == 0 or not math.isfinite(x):
        return 0.0 if x == 0 else x
    return float(f"{x:.6g}")


def expr_inputs(expr: Any) -> list[str]:
    """The raw inputs an expression reads, in first-use order."""
    out: list[str] = []
    if isinstance(expr, str):
        return [expr]
    if isinstance(expr, list) and expr and isinstance(expr[0], str):
        for arg in expr[1:]:
            if isinstance(arg, str | list):
                out.extend(i for i in expr_inputs(arg) if i not in out)
    return out


def _check_expr(expr: Any, where: str) -> None:
    if isinstance(expr, str):
        return
    if not (isinstance(expr, list) and expr and expr[0] in EXPR_OPS):
        raise BundleError(f"{where}: not an expression: {expr!r}")
    op, args = expr[0], expr[1:]
    if op in ("log1p", "value") and not (len(args) == 1 and isinstance(args[0], str | list)):
        raise BundleError(f"{where}: {op} takes one argument")
    if op in ("ge", "lt") and not (len(args) == 2 and isinstance(args[1], int | float)):
        raise BundleError(f"{where}: {op} takes an argument and a number")
    if op == "mul" and len(args) < 2:
        raise BundleError(f"{where}: mul takes two or more arguments")
    for arg in args:
        if isinstance(arg, str | list):
            _check_expr(arg, where)


def validate(bundle: PolicyBundle, velocity_digest: str | None = None) -> None:
    """Consistency: known inputs, groups that cover every input, one weight per feature, ordered thresholds."""
    from fraudrt.rtdl.online_feature_plane import load_definitions

    if bundle.schema != SCHEMA:
        raise BundleError(f"unknown bundle schema {bundle.schema!r}")
    known = known_inputs(load_definitions())
    for model in bundle.models:
        where = f"model {model.name}"
        if len(model.weights) != len(model.features):
            raise BundleError(f"{where}: {len(model.weights)} weights for {len(model.features)} features")
        t = model.thresholds
        if not 0.0 <= t.STEP_UP <= t.REVIEW <= t.DECLINE <= 1.0:
            raise BundleError(f"{where}: thresholds must rise from STEP_UP to DECLINE within [0, 1]")
        for feature in model.features:
            _check_expr(feature.expr, f"{where}, feature {feature.name}")
            if feature.scale <= 0:
                raise BundleError(f"{where}, feature {feature.name}: scale must be > 0")
            for name in expr_inputs(feature.expr):
                if name not in known:
                    raise BundleError(f"{where}, feature {feature.name}: unknown input {name!r}")
                if group_of(name) not in model.groups:
                    raise BundleError(f"{where}: feature {feature.name} reads {name} outside its groups")
    ids = [r.id for r in bundle.rules]
    if len(set(ids)) != len(ids):
        raise BundleError(f"rule ids must be unique: {ids}")
    for rule in bundle.rules:
        for name in rule.inputs:
            if name not in known:
                raise BundleError(f"rule {rule.id}: unknown input {name!r}")
    if velocity_digest is not None and bundle.feature_definitions.get("velocity") != velocity_digest:
        raise BundleError("the bundle was fitted on other OFP feature definitions "
                          f"({bundle.feature_definitions.get('velocity')} != {velocity_digest})")


def _rounded(obj: Any) -> Any:
    if isinstance(obj, float):
        return round6(obj)
    if isinstance(obj, dict):
        return {k: _rounded(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_rounded(v) for v in obj]
    return obj


def canonical_bytes(bundle: PolicyBundle) -> bytes:
    """The bundle's file bytes (and digest input): sorted keys, indent 2, ASCII, floats at 6 digits."""
    return (json.dumps(_rounded(msgspec.to_builtins(bundle)), sort_keys=True, indent=2, ensure_ascii=True,
                       allow_nan=False) + "\n").encode("ascii")


def bundle_digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def parse_bundle(data: bytes, source: str = "<bytes>") -> LoadedBundle:
    try:
        bundle = msgspec.json.decode(data, type=PolicyBundle)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise BundleError(f"{source}: {exc}") from exc
    if canonical_bytes(bundle) != data:
        raise BundleError(f"{source}: not in canonical form (write bundles with `fraudrt policy`)")
    validate(bundle)
    return LoadedBundle(bundle=bundle, digest=bundle_digest(data), path=source)


def load_bundle(path: Path | str) -> LoadedBundle:
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise BundleError(f"{path}: {exc}") from exc
    return parse_bundle(data, str(path))


def write_bundle(bundle: PolicyBundle, path: Path | str) -> str:
    """Validate, write canonically (atomically), return the digest."""
    validate(bundle)
    data = canonical_bytes(bundle)
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp")
    tmp.write_bytes(data)
    tmp.replace(target)
    return bundle_digest(data)
