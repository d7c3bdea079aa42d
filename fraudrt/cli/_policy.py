"""`fraudrt policy fit|rules|evaluate`: write policy bundles and measure their decision quality."""

from __future__ import annotations

from pathlib import Path

import click
import msgspec

from fraudrt.config import config_dir

from ._common import echo_json


def _policy_dir() -> Path:
    return config_dir() / "policy"


@click.group()
def policy() -> None:
    """Policy bundles: fit the model bundle, write the rules-only bundle, evaluate quality."""


@policy.command("fit")
@click.option("--world", "worlds", multiple=True, required=True,
              type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="A training engine run root (repeat to fit on several worlds). Never the run's own seed.")
@click.option("--spec", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="Model spec (default: config/policy/model_spec_v1.yaml).")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True, help="Bundle file to write.")
@click.option("--mode", type=click.Choice(["fraud", "baseline"]), default="fraud", show_default=True)
def fit_cmd(worlds: tuple[Path, ...], spec: Path | None, out: Path, mode: str) -> None:
    """Fit the spec's models on the training worlds' offline features and write a canonical bundle."""
    from fraudrt.rtdl.policy import BundleError, FitError, fit_bundle, load_fit_spec, write_bundle

    spec_path = spec or _policy_dir() / "model_spec_v1.yaml"
    try:
        fitted = fit_bundle(load_fit_spec(spec_path), spec_path.parent, list(worlds), mode)
        digest = write_bundle(fitted, out)
    except (FitError, BundleError, FileNotFoundError, ValueError) as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"bundle {fitted.bundle_id} v{fitted.version}: {len(fitted.models)} model(s), "
               f"{len(fitted.rules)} rule(s)")
    assert fitted.training is not None
    for name, shares in fitted.training.results.items():
        acted_legit = shares["legit.REVIEW"] + shares["legit.DECLINE"]
        acted_fraud = shares["fraud.REVIEW"] + shares["fraud.DECLINE"]
        click.echo(f"  {name:10} training: acts on {acted_fraud:.1%} of fraud, {acted_legit:.2%} of legit")
    click.echo(f"wrote {out} sha256={digest}")


@policy.command("rules")
@click.option("--rules", "rules_path", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="Rule set (default: config/policy/rules_only_v1.yaml).")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True, help="Bundle file to write.")
def rules_cmd(rules_path: Path | None, out: Path) -> None:
    """Write a rules-only bundle (no model) from a rule set."""
    from fraudrt.rtdl.policy import BundleError, FitError, load_rule_set, rules_bundle, write_bundle

    try:
        bundle = rules_bundle(load_rule_set(rules_path or _policy_dir() / "rules_only_v1.yaml"))
        digest = write_bundle(bundle, out)
    except (FitError, BundleError) as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"wrote {out} ({len(bundle.rules)} rules) sha256={digest}")


@policy.command("evaluate")
@click.option("--world", type=click.Path(exists=True, file_okay=False, path_type=Path), required=True,
              help="An evaluation engine run root (a seed not used for fitting).")
@click.option("--policy", "policy_path", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="Decision policy naming the bundles (default: config/policy/decision_policy.yaml).")
@click.option("--mode", type=click.Choice(["fraud", "baseline"]), default="fraud", show_default=True)
@click.option("--json", "as_json", is_flag=True)
def evaluate_cmd(world: Path, policy_path: Path | None, mode: str, as_json: bool) -> None:
    """Decision quality of the model bundle and the rules-only bundle on one world, through DF's scoring."""
    from fraudrt.rtdl.policy import GROUPS, BundleError, PolicyError, compare, evaluate_world, load_bundle, load_policy

    try:
        pol = load_policy(policy_path)
        model, rules = load_bundle(pol.bundle_path("model")), load_bundle(pol.bundle_path("rules_only"))
    except (PolicyError, BundleError) as exc:
        raise click.ClickException(str(exc)) from exc
    no_graph = [g for g in GROUPS if g != "graph"]
    reports = evaluate_world(world, [("model", model, GROUPS, True), ("model_no_graph", model, no_graph, True),
                                     ("rules_only", rules, GROUPS, False)], mode=mode)
    verdict = compare(reports[0], reports[2])
    if as_json:
        echo_json({"world": str(world), "reports": msgspec.to_builtins(reports), "targets": verdict})
        return
    click.echo(f"{'bundle':16} {'flows':>7} {'fraud':>6} {'recall':>7} {'FPR':>7} {'precision':>9} "
               f"{'legit step-up':>13}")
    for r in reports:
        click.echo(f"{r.label:16} {r.flows:>7} {r.fraud_flows:>6} {_pct(r.recall):>7} "
                   f"{_pct(r.false_positive_rate, 2):>7} {_pct(r.precision):>9} {_pct(r.legit_step_up_rate, 2):>13}")
        for c in r.per_campaign:
            if c.campaign_type != "legit":
                click.echo(f"  {c.campaign_type:20} recall {_pct(c.recall):>7} of {c.flows}")
    click.echo(" ".join(f"{k}={v}" for k, v in verdict.items()))


def _pct(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}%}"
