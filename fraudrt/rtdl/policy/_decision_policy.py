"""The decision policy (`config/policy/decision_policy.yaml`): bundles, posture capabilities, the ladder.

One parsed, validated, digested document shared by the Degrade Ladder (what moves the posture) and
the Decision Fabric (what a posture lets it use). The digest covers the parsed document, so a comment
or a reordering of keys does not change it, and is recorded on every posture change and folded into
every decision's `run_config_digest`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final, Literal

import msgspec
import yaml

from fraudrt.config import config_dir
from fraudrt.contracts import POSTURE_MODES, Action, PostureMode, recipe_hash

DEFAULT_FILE: Final = "decision_policy.yaml"
Group = Literal["request", "binding", "velocity", "graph"]
GROUPS: Final[tuple[str, ...]] = ("request", "binding", "velocity", "graph")
_RANK: Final = {mode: i for i, mode in enumerate(POSTURE_MODES)}


class PolicyError(ValueError):
    """The decision policy file is unreadable or inconsistent (the message names the problem)."""


def rank(mode: str) -> int:
    """NORMAL 0 < DEGRADED_1 1 < DEGRADED_2 2 < FAIL_CLOSED 3: how much a posture takes away."""
    return _RANK[mode]


def worst(modes: list[str] | tuple[str, ...], default: str = "NORMAL") -> str:
    return max(modes, key=rank, default=default)


class _Strict(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    pass


class Bundles(_Strict, frozen=True, kw_only=True):
    model: str
    rules_only: str


class PostureCapabilities(_Strict, frozen=True, kw_only=True):
    """What DF may use under one posture."""

    groups: tuple[Group, ...]
    model: bool
    context_missing_action: Action
    forced_action: Action | None = None


class SignalSpec(_Strict, frozen=True, kw_only=True):
    """One projector the ladder watches, and the posture its fault forces."""

    component: str
    lag_ms: float
    on_fault: PostureMode


class LadderSpec(_Strict, frozen=True, kw_only=True):
    tick_seconds: float = 1.0
    quiet_period_seconds: float = 30.0
    report_stale_seconds: float = 10.0
    startup_grace_seconds: float = 30.0
    signals: tuple[SignalSpec, ...] = ()
    bundle_unavailable: PostureMode = "DEGRADED_2"


class _Document(_Strict, frozen=True, kw_only=True):
    id: str
    version: int
    bundles: Bundles
    postures: dict[PostureMode, PostureCapabilities]
    ladder: LadderSpec


class DecisionPolicy(msgspec.Struct, frozen=True, kw_only=True):
    """The parsed policy, with where it came from (bundle paths resolve against `directory`)."""

    id: str
    version: int
    bundles: Bundles
    postures: dict[str, PostureCapabilities]
    ladder: LadderSpec
    digest: str
    directory: str

    def capabilities(self, mode: str) -> PostureCapabilities:
        return self.postures[mode]

    def bundle_path(self, which: Literal["model", "rules_only"]) -> Path:
        name: str = self.bundles.model if which == "model" else self.bundles.rules_only
        return Path(self.directory) / name


def parse_policy(document: object, directory: Path) -> DecisionPolicy:
    try:
        doc = msgspec.convert(document, _Document)
    except msgspec.ValidationError as exc:
        raise PolicyError(f"decision policy: {exc}") from exc
    if set(doc.postures) != set(POSTURE_MODES):
        raise PolicyError(f"decision policy: postures must be exactly {list(POSTURE_MODES)}, "
                          f"not {sorted(doc.postures)}")
    previous: set[str] | None = None
    for mode in POSTURE_MODES:
        caps = doc.postures[mode]  # type: ignore[index]
        groups: set[str] = set(caps.groups)
        # A worse posture never allows more than a better one: the ladder only ever takes away.
        if previous is not None and not groups <= previous:
            raise PolicyError(f"decision policy: {mode} allows groups a better posture does not")
        if caps.model and not {"request", "binding"} <= groups:
            raise PolicyError(f"decision policy: {mode} runs a model without request and binding features")
        previous = groups
    if doc.ladder.tick_seconds <= 0 or doc.ladder.quiet_period_seconds < 0:
        raise PolicyError("decision policy: ladder tick must be > 0 and the quiet period >= 0")
    names = [s.component for s in doc.ladder.signals]
    if len(set(names)) != len(names):
        raise PolicyError(f"decision policy: a component is watched twice: {names}")
    digest = recipe_hash("fraudrt.decision_policy.v1", msgspec.to_builtins(doc))
    return DecisionPolicy(id=doc.id, version=doc.version, bundles=doc.bundles,
                          postures={str(k): v for k, v in doc.postures.items()}, ladder=doc.ladder,
                          digest=digest, directory=str(directory))


def load_policy(path: Path | str | None = None) -> DecisionPolicy:
    """The decision policy at `path` (default `config/policy/decision_policy.yaml`)."""
    source = Path(path) if path is not None else config_dir() / "policy" / DEFAULT_FILE
    try:
        document = yaml.safe_load(source.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise PolicyError(f"decision policy {source}: {exc}") from exc
    return parse_policy(document, source.resolve().parent)
