"""Decode each image once into an on-disk cache at model resolution.

Re-decoding PNGs every epoch was the main cost of the student project's ``ImageDataGenerator``.
We decode and resize each image once into a uint8 ``.npy`` file that is memory-mapped at training
time, so memory stays bounded however large the dataset. The cache key covers the source files
(path, size, modification time), the image size and the preprocessing version: change any of them
and the cache is rebuilt.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import signal
import threading
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import cv2
import numpy as np

from covidxray import atomic, paths
from covidxray.data.imageio import read_image
from covidxray.errors import DataError, DiskSpaceError

#: What happens to a file before it reaches the model; stored in run.json and checked at predict time.
PREPROCESSING = {
    "version": 1,
    "decode": "covidxray.data.imageio.read_image: 8-bit grayscale (DICOM VOI LUT, MONOCHROME1 inverted, 16-bit min-max)",
    "resize": "cv2.resize INTER_AREA to image_size x image_size (no padding)",
    "model_input": "raw 0-255 grayscale, shape (image_size, image_size, 1); gray->RGB and "
    "the backbone's preprocess_input are layers inside the model",
}


def load_for_model(path: str | Path, size: int) -> np.ndarray:
    """Read one image and resize it as training does: the single definition of model-input pixels.

    Args:
        path: Image file (any format :func:`covidxray.data.imageio.read_image` reads).
        size: Model input size.

    Returns:
        ``(size, size)`` uint8 array.

    Raises:
        ImageReadError: Unreadable file, with the path and reason.
    """
    return resize_for_model(read_image(path), size)


def resize_mask(mask: np.ndarray, size: int) -> np.ndarray:
    """A mask at model size: ``(size, size)`` bool, nearest neighbour (no blending across the boundary)."""
    return cv2.resize(np.asarray(mask).astype(np.uint8), (size, size), interpolation=cv2.INTER_NEAREST) > 0


def load_masks(paths: Sequence[str], size: int, base: str | Path) -> np.ndarray:
    """Mask files at model size, ``(N, size, size)`` bool; an empty path gives an all-False mask.

    Args:
        paths: Mask files, relative ones relative to ``base``; "" where an image has none.
        size: Model input size.
        base: Folder of relative paths (the manifest's or the run's).
    """
    from covidxray.data.imageio import read_mask

    out = np.zeros((len(paths), size, size), bool)
    for i, p in enumerate(paths):
        if p:
            out[i] = resize_mask(read_mask(p if Path(p).is_absolute() else Path(base) / p), size)
    return out


def resize_for_model(img: np.ndarray, size: int) -> np.ndarray:
    """Resize a grayscale image to ``(size, size)`` as :func:`load_for_model` does (area when shrinking)."""
    if img.shape != (size, size):
        interp = cv2.INTER_AREA if min(img.shape) >= size else cv2.INTER_LINEAR
        img = cv2.resize(img, (size, size), interpolation=interp)
    return img


def cache_key(files: Sequence[str], size: int) -> str:
    """Hash of the source files' identity, the size and the preprocessing version."""
    h = hashlib.sha256(json.dumps(PREPROCESSING, sort_keys=True).encode())
    h.update(str(size).encode())
    for f in files:
        st = os.stat(f)
        h.update(f"{f}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:16]


def _load_chunk(args: tuple[list[str], int]) -> np.ndarray:
    files, size = args
    return np.stack([load_for_model(f, size) for f in files])


def build_cache(
    files: Sequence[str], size: int, root: str | Path | None = None, workers: int = 1, chunk: int = 64
) -> np.ndarray:
    """Return a read-only memory map ``(N, size, size)`` uint8 of the files, building it if needed.

    Args:
        files: Image paths in dataset order.
        size: Model input size.
        root: Cache folder (``data/cache`` by default).
        workers: Decoding processes.
        chunk: Files per task.

    Returns:
        The memory-mapped array.

    Raises:
        ImageReadError: A file that was indexed can no longer be read (named in the message).
    """
    files = [str(f) for f in files]
    folder = Path(root or paths.CACHE) / f"{size}px-{cache_key(files, size)}"
    target = folder / "images.npy"
    if not target.exists():
        folder.mkdir(parents=True, exist_ok=True)
        atomic.remove_stale_tmp(folder)
        for old in folder.glob("images.*.tmp.npy"):  # the temporary name used before covidxray.atomic
            old.unlink(missing_ok=True)
        _build(files, size, folder, target, workers, chunk)
    return np.load(target, mmap_mode="r")


def _build(files: list[str], size: int, folder: Path, target: Path, workers: int, chunk: int) -> None:
    """Decode into a temporary memory map that is moved over ``target`` only when complete.

    The file is allocated for real first (``posix_fallocate``) after a free-space check, so a full
    disk is a :class:`~covidxray.errors.DiskSpaceError` up front rather than a SIGBUS halfway; the
    temporary file is removed on every way out (error, Ctrl-C, SIGTERM).
    """
    shape = (len(files), size, size)
    nbytes = int(np.prod(shape))
    atomic.check_free_space(folder, nbytes + 2**16, f"the {size} px image cache of {len(files)} images")
    with atomic.atomic_path(target) as tmp, _sigterm_as_interrupt():
        _allocate(tmp, shape)
        arr = np.lib.format.open_memmap(tmp, mode="r+")
        tasks = [(files[i : i + chunk], size) for i in range(0, len(files), chunk)]
        try:
            if workers > 1 and len(tasks) > 1:
                with ProcessPoolExecutor(workers) as pool:
                    for i, block in enumerate(pool.map(_load_chunk, tasks)):
                        arr[i * chunk : i * chunk + len(block)] = block
            else:
                for i, task in enumerate(tasks):
                    arr[i * chunk : i * chunk + len(task[0])] = _load_chunk(task)
            arr.flush()
        finally:
            del arr
        atomic.write_json(folder / "meta.json", {"n": len(files), "size": size, **PREPROCESSING}, indent=None)


def _allocate(path: Path, shape: tuple[int, ...]) -> None:
    """Write an ``.npy`` header for ``shape`` uint8 and reserve the data blocks on disk."""
    header = {"descr": np.lib.format.dtype_to_descr(np.dtype(np.uint8)), "fortran_order": False, "shape": shape}
    with open(path, "wb") as fh:
        np.lib.format.write_array_header_1_0(fh, header)
        offset = fh.tell()
        total = offset + int(np.prod(shape))
        fh.flush()
        try:
            os.posix_fallocate(fh.fileno(), 0, total)
        except OSError as err:
            if err.errno in (errno.ENOSPC, errno.EDQUOT):
                raise DiskSpaceError(f"{path.parent}: not enough free disk space for the image cache "
                                     f"({total / 2**20:.1f} MiB)") from None
            if err.errno not in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):
                raise
            fh.truncate(total)  # file system without fallocate: sparse, the free-space check stands
        except AttributeError:  # no posix_fallocate (macOS, Windows)
            fh.truncate(total)


@contextlib.contextmanager
def _sigterm_as_interrupt():
    """In the main thread, turn SIGTERM into KeyboardInterrupt so cleanup runs (restored after)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    try:
        previous = signal.signal(signal.SIGTERM, handler)
    except (ValueError, OSError):
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def cached_images(files: Sequence[str], size: int, cfg, inputs=None) -> np.ndarray:
    """Decode-once cache of the files at model size, in the config's ``data.cache_dir``
    (see :func:`build_cache`).

    Args:
        files: Image paths.
        size: Model input size.
        cfg: Config (cache folder, workers).
        inputs: A :class:`covidxray.data.inputs.ModelInputs` (a run's normalization / lung field),
            whose transformed copy of the cache is returned; None = the plain decoded images.

    Raises:
        DataError: Naming files that no longer exist.
    """
    missing = [f for f in files if not os.path.isfile(f)]
    if missing:
        shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        raise DataError(f"{len(missing)} image(s) listed for this run no longer exist: {shown}")
    base = build_cache(list(files), size, paths.from_config(cfg.data.cache_dir), cfg.data.workers)
    return base if inputs is None else inputs.cached(base)
