"""The CLI's shared parts: the Typer app, the common options and the error-to-one-line decorator.

Known failure kinds (bad config, missing data, unreadable files, incomplete runs, unavailable
weights) end with one clear ``error:`` line and exit status 2, never a TensorFlow traceback.
"""

from __future__ import annotations

import functools
import os
from typing import Annotated

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import typer  # noqa: E402

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="COVID-19 / Normal / Viral Pneumonia on chest X-rays: data, training, evaluation, "
                       "explanations.")

ConfigOpt = Annotated[list[str], typer.Option("--config", "-c", help="Config overlay(s): name or YAML path.")]
SetOpt = Annotated[list[str], typer.Option("--set", help="Override: dotted.key=value (repeatable).")]


def load_cfg(config: list[str] | None, overrides: list[str] | None):
    from covidxray.config import load_config

    return load_config(config or [], overrides or [])


def echo(msg: str) -> None:
    typer.echo(msg)


def _known_errors() -> tuple[type[Exception], ...]:
    from covidxray.errors import CovidxrayError

    return (CovidxrayError, FileNotFoundError, FileExistsError, IsADirectoryError, NotADirectoryError)


def command(name: str | None = None, target: typer.Typer | None = None):
    """``app.command`` (or ``target.command``, for a sub-app) whose known errors end with one ``error:`` line
    and exit status 2."""
    def register(fn):
        @functools.wraps(fn)
        def run(*args, **kwargs):
            try:
                return fn(*args, **kwargs)
            except _known_errors() as err:
                typer.echo(f"error: {err}", err=True)
                raise typer.Exit(2) from None

        return (target or app).command(name)(run)

    return register
