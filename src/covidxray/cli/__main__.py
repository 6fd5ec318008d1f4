"""``python -m covidxray.cli``: the same as the ``covidxray`` console script."""

from covidxray.cli import main

main()
