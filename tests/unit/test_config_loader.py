"""The profile loader's errors and precedence, on throwaway profile files (no substrate)."""

from __future__ import annotations

from pathlib import Path

import pytest

from fraudrt.config import ConfigError, Settings, interpolate, load_settings

pytestmark = pytest.mark.unit


def _profile(tmp_path: Path, text: str, name: str = "p") -> Path:
    directory = tmp_path / "profiles"
    directory.mkdir(exist_ok=True)
    (directory / f"{name}.yaml").write_text(text)
    return directory


def _load(directory: Path, env: dict[str, str] | None = None, name: str = "p") -> Settings:
    return load_settings(name, env=env or {}, directory=directory)


BASE = "substrate: none\nhome: /nonexistent/fraudrt-home\n"


def test_unknown_key_names_the_key_and_the_file(tmp_path: Path) -> None:
    directory = _profile(tmp_path, BASE + "s3:\n  regoin: eu-west-1\n")
    with pytest.raises(ConfigError) as err:
        _load(directory)
    assert "regoin" in str(err.value)
    assert str(directory / "p.yaml") in str(err.value)


def test_unknown_top_level_section_names_the_key_and_the_file(tmp_path: Path) -> None:
    directory = _profile(tmp_path, BASE + "kinesys:\n  shard_count: 2\n")
    with pytest.raises(ConfigError) as err:
        _load(directory)
    assert "kinesys" in str(err.value) and str(directory / "p.yaml") in str(err.value)


def test_missing_variable_without_default_names_the_variable_and_the_file(tmp_path: Path) -> None:
    directory = _profile(tmp_path, BASE + "postgres:\n  dsn: ${FRAUDRT_TEST_DSN_UNSET}\n")
    with pytest.raises(ConfigError) as err:
        _load(directory, env={"OTHER": "x"})
    assert "FRAUDRT_TEST_DSN_UNSET" in str(err.value)
    assert str(directory / "p.yaml") in str(err.value)


def test_variables_with_defaults_and_set_variables_resolve(tmp_path: Path) -> None:
    directory = _profile(tmp_path, BASE + "postgres:\n  dsn: ${MY_DSN}\nkinesis:\n  shard_count: ${SHARDS:-3}\n")
    settings = _load(directory, env={"MY_DSN": "postgresql://u@h/db"})
    assert settings.postgres.dsn == "postgresql://u@h/db"
    assert settings.kinesis.shard_count == 3
    assert interpolate("a${X:-}b", "src", {}) == "ab"


def test_env_override_wins_over_the_profile_and_its_variables(tmp_path: Path) -> None:
    directory = _profile(tmp_path, BASE + "s3:\n  region: ${AWS_REGION:-us-east-1}\n")
    env = {"AWS_REGION": "eu-central-1", "FRAUDRT__S3__REGION": "ap-south-1"}
    settings = _load(directory, env=env)
    assert settings.s3.region == "ap-south-1"
    # Without the override the interpolated profile value applies; typed values are parsed.
    assert _load(directory, env={"AWS_REGION": "eu-central-1"}).s3.region == "eu-central-1"
    typed = _load(directory, env={"FRAUDRT__KINESIS__SHARD_COUNT": "4"})
    assert typed.kinesis.shard_count == 4


def test_malformed_yaml_names_the_file(tmp_path: Path) -> None:
    directory = _profile(tmp_path, BASE + "s3:\n  region: [unclosed\n")
    with pytest.raises(ConfigError) as err:
        _load(directory)
    assert str(directory / "p.yaml") in str(err.value)
    assert "YAML" in str(err.value)


def test_unknown_profile_names_the_path(tmp_path: Path) -> None:
    directory = _profile(tmp_path, BASE)
    with pytest.raises(ConfigError) as err:
        _load(directory, name="nope")
    assert "nope" in str(err.value) and str(directory / "nope.yaml") in str(err.value)


def test_the_shipped_profiles_load(tmp_path: Path) -> None:
    env = {"FRAUDRT_HOME": str(tmp_path / "home"), "DATABASE_URL": "postgresql://u@rds.example/db"}
    for name in ("embedded", "local_parity", "aws"):
        settings = load_settings(name, env=env)
        assert settings.profile == name
        assert settings.streams.prefix == ""
    # The aws profile has no default DSN: leaving it unset is an error naming the variable.
    with pytest.raises(ConfigError, match="DATABASE_URL"):
        load_settings("aws", env={"FRAUDRT_HOME": str(tmp_path / "home")})
