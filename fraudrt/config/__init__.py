"""Configuration: one interface (endpoints, credentials, names, paths), filled by profiles."""

from ._loader import ConfigError, config_dir, interpolate, load_settings, project_root, substrate_overlay_path
from ._model import (
    BucketSettings,
    KinesisSettings,
    PostgresSettings,
    S3Settings,
    Settings,
    StreamSettings,
    SubstrateKind,
)

__all__ = [
    "BucketSettings",
    "ConfigError",
    "KinesisSettings",
    "PostgresSettings",
    "S3Settings",
    "Settings",
    "StreamSettings",
    "SubstrateKind",
    "config_dir",
    "interpolate",
    "load_settings",
    "project_root",
    "substrate_overlay_path",
]
