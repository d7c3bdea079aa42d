"""generate_world: request -> simulated world -> engine run root on disk (written atomically)."""

from __future__ import annotations

import itertools
import os
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec
import numpy as np

from . import _ids, _writer
from ._gates import write_gate_bundle
from ._interface import (
    RUN_RECEIPT_FILENAME,
    catalogue_path,
    file_digest,
    gate_map_path,
    load_catalogue,
    load_gate_map,
)
from ._request import GenerateRequest, ResolvedSize, WorldSummary, resolve_size
from ._world import World, WorldKey, simulate

ENGINE_NAME = "fraudrt.engine"
# Bump when the same parameters would produce different data: it enters the manifest fingerprint.
ENGINE_VERSION = "1.0.0"


def _rfc3339(us: int) -> str:
    return datetime.fromtimestamp(us / 1e6, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def generation_parameters(req: GenerateRequest, size: ResolvedSize) -> dict[str, Any]:
    """What determines the data besides seed and scenario (so: not out_dir, n_parts, modes)."""
    return {
        "engine_version": ENGINE_VERSION,
        "n_flows": size.n_flows,
        "start_utc": _rfc3339(size.start_us),
        "duration_us": size.duration_us,
        "fraud_rate": req.fraud_rate,
        "campaign_mix": msgspec.to_builtins(req.campaign_mix),
        "parameters": msgspec.to_builtins(req.parameters),
    }


def world_identity(req: GenerateRequest) -> tuple[ResolvedSize, WorldKey, str, dict[str, Any]]:
    size = resolve_size(req)
    params = generation_parameters(req, size)
    ph = _ids.parameter_hash(params)
    mf = _ids.manifest_fingerprint(
        engine=ENGINE_NAME,
        engine_version=ENGINE_VERSION,
        parameter_hash=ph,
        catalogue_digest=file_digest(catalogue_path()),
        gate_map_digest=file_digest(gate_map_path()),
    )
    wk = WorldKey(manifest_fingerprint=mf, parameter_hash=ph, seed=req.seed, scenario_id=req.scenario_id)
    return size, wk, _ids.engine_run_id(mf, ph, req.seed, req.scenario_id), params


def _checks(world: World, size: ResolvedSize) -> list[dict[str, Any]]:
    """The validation the gate vouches for; a failure is a generator bug and writes no PASS."""
    end = size.start_us + size.duration_us
    checks = {
        "flow_id_unique": len(np.unique(world.flow_id)) == len(world.flow_id),
        "flow_id_in_range": bool((world.flow_id >= 1).all()),
        "arrival_seq_from_one": bool((world.arrival_seq >= 1).all()),
        "ts_within_window": bool(((world.ts_us >= size.start_us) & (world.ts_us < end)).all()),
        "response_after_request": bool((world.response_us > world.ts_us).all()),
        "fraud_rows_match_request": int(world.fraud.sum()) == size.n_fraud,
        "row_count_matches_request": len(world.ts_us) == size.n_flows,
    }
    failed = [k for k, ok in checks.items() if not ok]
    if failed:
        raise RuntimeError(f"generated world failed validation: {failed}")
    return [{"check_id": k, "status": "PASS"} for k in sorted(checks)]


def _prepare_target(out_dir: Path, run_id: str, overwrite: bool) -> Path:
    target = out_dir / run_id
    if target.exists():
        if not overwrite:
            raise FileExistsError(f"engine run root exists (overwrite=True / --overwrite replaces it): {target}")
        if not (target / RUN_RECEIPT_FILENAME).is_file():
            # Only ever replace something that is recognisably an engine run root.
            raise FileExistsError(f"refusing to replace a directory that is not an engine run root: {target}")
    return target


def generate_world(req: GenerateRequest) -> WorldSummary:
    """Simulate a world and write it as an engine run root at ``<out_dir>/<run_id>``."""
    t0 = time.perf_counter()
    size, wk, run_id, params = world_identity(req)
    out_dir = Path(req.out_dir)
    target = _prepare_target(out_dir, run_id, req.overwrite)
    catalogue = load_catalogue()
    gate_map = load_gate_map()

    world = simulate(req, size, wk)
    checks = _checks(world, size)

    out_dir.mkdir(parents=True, exist_ok=True)
    staging = out_dir / f".{run_id}.partial-{os.getpid()}"
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir()
    try:
        files, bytes_written = _write_outputs(staging, world, wk, req, catalogue)
        row_counts = {oid: sum(rows for _, rows in fl) for oid, fl in files.items()}
        _write_gates(staging, wk, run_id, files, row_counts, checks, gate_map)
        receipt = {
            "run_id": run_id,
            "manifest_fingerprint": wk.manifest_fingerprint,
            "parameter_hash": wk.parameter_hash,
            "seed": wk.seed,
            # Derived from the world, not the wall clock, so a re-run is byte-identical.
            "created_utc": _rfc3339(size.start_us),
            "engine": ENGINE_NAME,
            "engine_version": ENGINE_VERSION,
            "scenario_ids": [wk.scenario_id],
            "world_window": {
                "start_utc": _rfc3339(size.start_us),
                "end_utc": _rfc3339(size.start_us + size.duration_us),
            },
            "outputs": sorted(files),
            "catalogue_digest": file_digest(catalogue_path()),
            "gate_map_digest": file_digest(gate_map_path()),
            "parameters": params,
        }
        (staging / RUN_RECEIPT_FILENAME).write_bytes(_writer.json_bytes(receipt))
        _swap_into_place(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise

    has_events = any(o.role == "traffic" for o in _writer.catalogue_outputs(catalogue, req.modes))
    max_us = int(world.response_us.max() if has_events else world.ts_us.max())
    return WorldSummary(
        engine_run_root=str(target),
        run_id=run_id,
        manifest_fingerprint=wk.manifest_fingerprint,
        parameter_hash=wk.parameter_hash,
        seed=wk.seed,
        scenario_id=wk.scenario_id,
        n_flows=size.n_flows,
        n_fraud_flows=size.n_fraud,
        campaigns=dict(world.campaigns),
        row_counts=row_counts,
        part_counts={oid: len(fl) for oid, fl in files.items()},
        min_ts_utc=_rfc3339(int(world.ts_us.min())),
        max_ts_utc=_rfc3339(max_us),
        bytes_written=bytes_written,
        elapsed_s=round(time.perf_counter() - t0, 3),
    )


def _write_outputs(
    root: Path, world: World, wk: WorldKey, req: GenerateRequest, catalogue: Any
) -> tuple[dict[str, list[tuple[Path, int]]], int]:
    """Write every output batch by batch: batch i (a range of merchants) becomes part i of each output.

    Building frames per batch bounds memory to a few batches, whatever the world's size, and lets the
    batches run in parallel (polars and pyarrow do their work outside the GIL).
    """
    tokens = {
        "seed": str(wk.seed),
        "parameter_hash": wk.parameter_hash,
        "manifest_fingerprint": wk.manifest_fingerprint,
        "scenario_id": wk.scenario_id,
    }
    specs = _writer.catalogue_outputs(catalogue, req.modes)
    routing = _ids.routing_universe_hash(wk.manifest_fingerprint, wk.seed)
    # Baseline parts are numbered over the batches that hold a legitimate flow, so names stay contiguous.
    legit_rows = [int((~world.fraud[lo:hi]).sum()) for lo, hi in world.part_bounds]
    baseline_index = list(itertools.accumulate((1 if n else 0 for n in legit_rows), initial=0))

    def batch(i: int, lo: int, hi: int) -> list[tuple[str, int, Path, int, int]]:
        fr = _writer.Frames(world.rows(lo, hi), wk)
        written = []
        for spec in specs:
            if spec.mode == "baseline" and not legit_rows[i]:
                continue
            index = baseline_index[i] if spec.mode == "baseline" else i
            df = _writer.build_part(fr, spec, routing)
            path = _writer.part_dir(root, spec, tokens) / _writer.part_name(index)
            size = _writer.write_parquet(df, _writer.arrow_schema(spec), path)
            written.append((spec.output_id, index, path, df.height, size))
        return written

    with ThreadPoolExecutor(max_workers=max(2, os.cpu_count() or 2)) as pool:
        results = [
            r
            for f in [pool.submit(batch, i, lo, hi) for i, (lo, hi) in enumerate(world.part_bounds)]
            for r in f.result()
        ]
    files: dict[str, list[tuple[Path, int]]] = {spec.output_id: [] for spec in specs}
    for output_id, _, path, rows, _ in sorted(results, key=lambda r: (r[0], r[1])):
        files[output_id].append((path, rows))
    return files, sum(r[4] for r in results)


def _write_gates(
    root: Path,
    wk: WorldKey,
    run_id: str,
    files: dict[str, list[tuple[Path, int]]],
    row_counts: dict[str, int],
    checks: list[dict[str, Any]],
    gate_map: Any,
) -> None:
    for gate in gate_map.gates:
        outputs = {}
        for oid in gate.authorizes_outputs:
            if oid not in files:
                continue
            outputs[oid] = {
                "row_count": row_counts[oid],
                "files": [
                    {"path": p.relative_to(root).as_posix(), "rows": rows, "sha256_hex": _writer.sha256_file(p)}
                    for p, rows in files[oid]
                ],
            }
        report = {
            "gate_id": gate.gate_id,
            "segment": gate.segment,
            "engine": ENGINE_NAME,
            "engine_version": ENGINE_VERSION,
            "run_id": run_id,
            "manifest_fingerprint": wk.manifest_fingerprint,
            "parameter_hash": wk.parameter_hash,
            "seed": wk.seed,
            "scenario_id": wk.scenario_id,
            "overall_status": "PASS",
            "checks": checks,
            # The data files' digests are in the bundle, so the gate digest also vouches for the data.
            "outputs": outputs,
        }
        name = (
            f"s5_validation_report_{gate.segment}.json"
            if gate.segment == "6B"
            else (f"validation_report_{gate.segment}.json")
        )
        write_gate_bundle(root, gate, wk.manifest_fingerprint, {name: _writer.json_bytes(report)})


def _swap_into_place(staging: Path, target: Path) -> None:
    if target.exists():
        old = target.with_name(f".{target.name}.old-{os.getpid()}")
        os.replace(target, old)
        os.replace(staging, target)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(staging, target)
