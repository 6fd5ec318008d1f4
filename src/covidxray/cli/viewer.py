"""Viewer command: ``covidxray serve RUN`` (a Gradio page on one run, see :mod:`covidxray.viewer`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from covidxray.cli.base import command, echo


@command("serve")
def serve_cmd(
    run: Annotated[Path, typer.Argument(help="Run folder (models/RUN).")],
    port: Annotated[int, typer.Option(help="TCP port.")] = 7860,
    host: Annotated[str, typer.Option(help="Interface to listen on (0.0.0.0: every interface).")] = "127.0.0.1",
) -> None:
    """Serve a page that scores and explains uploaded chest X-rays with the run's model (offline)."""
    from covidxray.viewer.app import serve

    serve(run, host=host, port=port, log=echo)
