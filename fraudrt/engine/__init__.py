"""The engine: a synthetic world generator that writes in the data engine's own format.

fraudrt has no data engine, so it ships one: ``generate_world`` writes an engine run root (run receipt,
the six outputs as hive-partitioned zstd parquet, HashGate validation bundles) that the oracle, SR and
WSP consume exactly as they would a real engine's. The interface half (catalogue, gate map, receipt,
path rendering, gate verification) knows nothing about our generator and works on any such world.
"""

from ._gates import GateVerification, bundle_digest, bundle_members, parse_passed_flag, verify_gate
from ._generate import ENGINE_NAME, ENGINE_VERSION, generate_world, world_identity
from ._ids import flow_id
from ._interface import (
    CATALOGUE_FILENAME,
    GATE_MAP_FILENAME,
    RUN_RECEIPT_FILENAME,
    Catalogue,
    ColumnSpec,
    GateMap,
    GateSpec,
    OutputSpec,
    RunReceipt,
    VerificationMethod,
    catalogue_path,
    file_digest,
    gate_map_path,
    load_catalogue,
    load_gate_map,
    output_path_pattern,
    output_paths,
    partition_tokens,
    read_run_receipt,
    read_run_receipt_raw,
    render_template,
)
from ._request import CAMPAIGN_TYPES, CampaignMix, GenerateRequest, WorldParameters, WorldSummary

__all__ = [
    "CAMPAIGN_TYPES",
    "CATALOGUE_FILENAME",
    "ENGINE_NAME",
    "ENGINE_VERSION",
    "GATE_MAP_FILENAME",
    "RUN_RECEIPT_FILENAME",
    "CampaignMix",
    "Catalogue",
    "ColumnSpec",
    "GateMap",
    "GateSpec",
    "GateVerification",
    "GenerateRequest",
    "OutputSpec",
    "RunReceipt",
    "VerificationMethod",
    "WorldParameters",
    "WorldSummary",
    "bundle_digest",
    "bundle_members",
    "catalogue_path",
    "file_digest",
    "flow_id",
    "gate_map_path",
    "generate_world",
    "load_catalogue",
    "load_gate_map",
    "output_path_pattern",
    "output_paths",
    "parse_passed_flag",
    "partition_tokens",
    "read_run_receipt",
    "read_run_receipt_raw",
    "render_template",
    "verify_gate",
    "world_identity",
]
