"""Image files named on the command line: one folder walk and one suffix set for every command.

``covidxray predict DIR`` and ``covidxray explain DIR`` (and the notebooks) find images with
:func:`collect_images` and load them as the model sees them with :func:`model_inputs`.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

#: Extensions that are always tried as images in a folder (a file of another name is tried when
#: its content is an image, see :func:`covidxray.data.imageio.sniff_format`).
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".gif", ".webp", ".dcm", ".dicom"}
#: Folders never searched for images: a dataset's mask images are not inputs.
SKIPPED_FOLDERS = {"masks"}


def collect_images(inputs: Iterable[str | Path]) -> tuple[list[str], list[tuple[str, str]], list[str]]:
    """Expand files and folders (recursively, hidden entries and ``masks`` folders skipped) into image files.

    A file named explicitly is always tried. In a folder, a file is tried when its extension is
    in :data:`IMAGE_SUFFIXES` or its content is a recognised image; other files are ignored.

    Returns:
        ``(files, errors, ignored)``: absolute image paths in order without repeats,
        ``(path, reason)`` for inputs that do not exist, and the ignored non-image files.
    """
    from covidxray.data.imageio import sniff_format

    files, errors, ignored = [], [], []
    for item in map(Path, inputs):
        if item.is_dir():
            for dirpath, dirnames, names in os.walk(item):
                dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and d not in SKIPPED_FOLDERS)
                for name in sorted(n for n in names if not n.startswith(".")):
                    path = os.path.join(dirpath, name)
                    usable = Path(name).suffix.lower() in IMAGE_SUFFIXES or sniff_format(path)
                    (files if usable else ignored).append(os.path.abspath(path))
        elif item.exists():
            files.append(os.path.abspath(item))
        else:
            errors.append((str(item), "file not found"))
    return list(dict.fromkeys(files)), errors, ignored


def model_inputs(files: Sequence[str | Path], size: int) -> np.ndarray:
    """Images as the model receives them: ``(N, size, size)`` uint8 via :func:`covidxray.data.cache.load_for_model`."""
    from covidxray.data.cache import load_for_model

    return np.stack([load_for_model(f, size) for f in files])
