"""Shared CLI plumbing: the settings object on the click context and clean error reporting."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import anyio
import click

from fraudrt.config import ConfigError, Settings, load_settings

T = TypeVar("T")


class CliState:
    def __init__(self, profile: str | None) -> None:
        self.profile = profile
        self._settings: Settings | None = None

    @property
    def settings(self) -> Settings:
        # Loaded lazily so `--help` works without a valid profile.
        if self._settings is None:
            try:
                self._settings = load_settings(self.profile)
            except ConfigError as exc:
                raise click.ClickException(str(exc)) from exc
        return self._settings

    def reload(self) -> Settings:
        self._settings = None
        return self.settings


pass_state = click.make_pass_decorator(CliState)


def run_async(fn: Callable[..., Coroutine[Any, Any, T]], *args: Any) -> T:
    return anyio.run(fn, *args)


def echo_json(obj: Any) -> None:
    click.echo(json.dumps(obj, indent=2, sort_keys=True, default=str))


def fail(message: str, code: int = 1) -> None:
    click.echo(f"error: {message}", err=True)
    sys.exit(code)
