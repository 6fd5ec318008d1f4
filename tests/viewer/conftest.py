"""A tiny phantom run and the viewer loaded on it, shared by the viewer's tests (built in seconds)."""

from __future__ import annotations

import pytest

from helpers_runs import tiny_phantom_run


@pytest.fixture(scope="session")
def viewer_run(tmp_path_factory, phantom_dir):
    """A 64 px tiny-CNN run on the session's phantoms, with calibration and an OOD score."""
    return tiny_phantom_run(tmp_path_factory.mktemp("viewer") / "run", phantom_dir)


@pytest.fixture(scope="session")
def viewer(viewer_run):
    """The run loaded once by :class:`covidxray.viewer.session.Viewer`."""
    from covidxray.viewer.session import Viewer

    return Viewer(viewer_run, log=lambda *_: None)
