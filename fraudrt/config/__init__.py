"""Configuration: one interface (endpoints, credentials, names, paths), filled by profiles."""

from ._loader import ConfigError, config_dir, interpolate, load_settings, project_root, substrate_overlay_path
from ._model import (
    BucketSettings,
    CaseLabelsSettings,
    IngestionGateSettings,
    KinesisSettings,
    PostgresSettings,
    S3Settings,
    ScenarioRunnerSettings,
    Settings,
    StreamSettings,
    SubstrateKind,
    WorldStreamProducerSettings,
)

__all__ = [
    "BucketSettings",
    "CaseLabelsSettings",
    "ConfigError",
    "IngestionGateSettings",
    "KinesisSettings",
    "PostgresSettings",
    "S3Settings",
    "ScenarioRunnerSettings",
    "Settings",
    "StreamSettings",
    "SubstrateKind",
    "WorldStreamProducerSettings",
    "config_dir",
    "interpolate",
    "load_settings",
    "project_root",
    "substrate_overlay_path",
]
