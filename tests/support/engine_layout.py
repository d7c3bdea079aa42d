"""Rewrite a generated world into the layout a real engine writes (control_ingress.md §3).

Our generator writes every gate's index.json as ``{"members": [...]}`` and every column of the
catalogue; real engines write index.json as a bare array of artefact entries (6B) or an object with an
``artifacts`` array (here 5B, without per-member digests), leave out columns their schema marks
optional (``lambda_realised`` of ``arrival_events_5B``), and some writers turn parquet statistics off.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow.parquet as pq


def bundle_dir(world: Path, layer: str) -> Path:
    """The validation bundle of `layer` (e.g. ``layer3/6B``)."""
    return next(world.glob(f"data/{layer}/validation/manifest_fingerprint=*"))


def generated_members(bundle: Path) -> list[dict[str, Any]]:
    members: list[dict[str, Any]] = json.loads((bundle / "index.json").read_text())["members"]
    return members


def as_real_engine(world: Path) -> None:
    b6 = bundle_dir(world, "layer3/6B")
    entries = [{"artifact_id": Path(m["path"]).stem, **m} for m in generated_members(b6)]
    (b6 / "index.json").write_text(json.dumps(entries, indent=2))
    b5 = bundle_dir(world, "layer2/5B")
    artefacts = [{"artifact_id": Path(m["path"]).stem, "path": m["path"]} for m in generated_members(b5)]
    (b5 / "index.json").write_text(json.dumps({"gate_id": "gate.layer2.5B.validation", "artifacts": artefacts}))
    for part in world.glob("data/layer2/5B/arrival_events/**/part-*.parquet"):
        pl.read_parquet(part).drop("lambda_realised").write_parquet(part, compression="zstd")
    for part in world.glob("data/layer3/6B/s2_event_stream_baseline_6B/**/part-*.parquet"):
        pq.write_table(pq.read_table(part), part, compression="zstd", write_statistics=False)
