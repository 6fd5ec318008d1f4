"""``covidxray`` command line: thin wrappers around the package's functions.

The commands live by stage in :mod:`~covidxray.cli.data`, :mod:`~covidxray.cli.runs`,
:mod:`~covidxray.cli.trust`, :mod:`~covidxray.cli.lungs` and :mod:`~covidxray.cli.viewer`; importing this
package registers them all on :data:`app`.
"""

from covidxray.cli import data, lungs, runs, trust, viewer  # noqa: F401 (registers the commands)
from covidxray.cli.base import app


def main() -> None:
    """Entry point (the ``covidxray`` console script)."""
    app()


__all__ = ["app", "main"]
