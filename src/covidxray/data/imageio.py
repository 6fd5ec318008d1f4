"""Read chest X-rays of any common format into 8-bit grayscale arrays.

Every failure is raised as :class:`ImageReadError` with the file path and a short
reason, so callers can quarantine bad files instead of crashing. Conversion rules:

* 8-bit images keep their pixel values; colour (RGB, CMYK, palette, YCbCr) becomes
  grayscale by ITU-R 601 luma (``L = 0.299 R + 0.587 G + 0.114 B``, Pillow's
  ``convert("L")``). Alpha channels (RGBA, LA, transparent palettes) are ignored:
  the stored colour values are used as they are, no compositing.
* Images with more than 8 bits (16-bit PNG/TIFF, mode ``I;16*``/``I``/``F``) are
  scaled to 0..255 by the min-max of the image itself.
* JPEG/TIFF EXIF orientation is applied (``PIL.ImageOps.exif_transpose``).
* Multi-frame files (TIFF, GIF, DICOM) use their first frame.
* DICOM: modality LUT (rescale slope/intercept), then VOI LUT or window
  centre/width when present, scaled from the VOI output range to 0..255; without
  a VOI the min-max of the pixel data is used. MONOCHROME1 is inverted so that
  bone is always bright.
* Images whose shorter side is below ``min_size`` and constant images are refused.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import imagehash
import numpy as np
import pydicom
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError
from pydicom.pixels import apply_modality_lut, apply_voi_lut, get_decoder
from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

from covidxray.errors import CovidxrayError

ImageFile.LOAD_TRUNCATED_IMAGES = False  # truncated PNG/JPEG must raise, not pad

DICOM_SUFFIXES = (".dcm", ".dicom")
_HIGH_BIT_MODES = ("I", "F")  # plus every "I;16*" mode


class ImageReadError(CovidxrayError):
    """An image file that cannot be used, with its path and a short reason.

    Attributes:
        path: The offending file.
        reason: Short human-readable reason, e.g. ``"zero-byte file"``.
    """

    def __init__(self, path: str | Path, reason: str) -> None:
        super().__init__(str(path), reason)  # args kept picklable for worker pools
        self.path = str(path)
        self.reason = reason

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}"


def _check_file(path: Path) -> None:
    if not path.exists():
        raise ImageReadError(path, "file not found")
    if not path.is_file():
        raise ImageReadError(path, "not a file")
    if path.stat().st_size == 0:
        raise ImageReadError(path, "zero-byte file")
    if not os.access(path, os.R_OK):
        raise ImageReadError(path, "permission denied")


def _pil_identifies(path: Path) -> bool:
    try:
        with Image.open(path):
            return True
    except Exception:
        return False


def is_dicom(path: str | Path) -> bool:
    """Tell whether a file is DICOM, by content first and extension second.

    Args:
        path: File to test (must be readable).

    Returns:
        True for a ``DICM`` marker at byte 128, or for a ``.dcm``/``.dicom`` file
        (DICOM without preamble) that is not a format Pillow recognises.
    """
    path = Path(path)
    with open(path, "rb") as fh:
        header = fh.read(132)
    if header[128:132] == b"DICM":
        return True
    return path.suffix.lower() in DICOM_SUFFIXES and not _pil_identifies(path)


def sniff_format(path: str | Path) -> str | None:
    """Identify an image format from file content without decoding the pixels.

    Args:
        path: File to test.

    Returns:
        ``"DICOM"``, a Pillow format name such as ``"PNG"``, or None when the
        file is missing, empty or not a recognised image.
    """
    path = Path(path)
    try:
        _check_file(path)
        if is_dicom(path):
            return "DICOM"
        with Image.open(path) as im:
            return im.format
    except (ImageReadError, OSError, UnidentifiedImageError):
        return None


def _pil_gray(path: Path) -> np.ndarray:
    """Decode a Pillow-readable file to a 2-D array (uint8, or wider for >8-bit)."""
    try:
        with Image.open(path) as im:
            im.load()
            im = ImageOps.exif_transpose(im)
            mode = im.mode
            if mode in _HIGH_BIT_MODES or mode.startswith("I;16"):
                arr = np.asarray(im)
            elif mode in ("L", "LA", "La"):
                arr = np.asarray(im.getchannel(0))
            else:  # 1, P, PA, RGB, RGBA, RGBX, CMYK, YCbCr, LAB, HSV, ...
                arr = np.asarray(im.convert("RGB").convert("L"))
    except UnidentifiedImageError:
        raise ImageReadError(path, "not an image (unrecognised format)") from None
    except Image.DecompressionBombError as err:
        raise ImageReadError(path, f"image too large: {err}") from None
    except Exception as err:  # Pillow raises OSError, SyntaxError, ValueError, ... on bad data
        raise ImageReadError(path, f"truncated or corrupt image: {err}") from None
    return arr.reshape(arr.shape[:2])


#: pip packages behind pydicom's decoder plugins (named in messages when a decoder is missing).
_PLUGIN_PACKAGES = {"gdcm": "python-gdcm", "pylibjpeg": "pylibjpeg with pylibjpeg-libjpeg, -openjpeg and -rle",
                    "pyjpegls": "pyjpegls", "pillow": "pillow"}


def _missing_packages(decoder) -> str:
    """pip packages of the decoder plugins pydicom lacks for a transfer syntax ("" if none)."""
    try:
        missing = list(decoder.missing_dependencies)
    except Exception:  # noqa: BLE001 - informational only
        return ""
    names = [_PLUGIN_PACKAGES.get(m.split(" - ")[0].strip(), m) for m in missing]
    return " or ".join(dict.fromkeys(names))


def _decode_failure(ds: pydicom.Dataset, tsyntax, err: Exception) -> str:
    """Reason for pixel data that no installed decoder read: which decoders failed, and which
    package could decode it (a 12-bit JPEG needs pylibjpeg-libjpeg or python-gdcm, not Pillow)."""
    bits = ds.get("BitsStored", "?")
    try:
        decoder = get_decoder(tsyntax)
    except NotImplementedError:
        decoder = None
    if decoder is None or not tsyntax.is_compressed:
        return f"corrupt DICOM pixel data: {err}"
    tried = ", ".join(decoder.available_plugins) or "none"
    missing = _missing_packages(decoder)
    lines = [ln.strip() for ln in str(err).strip().splitlines()]
    first = "; ".join(lines[1:] if len(lines) > 1 else lines)[:300]
    return (f"cannot decode {tsyntax.name} pixel data ({bits}-bit): installed decoders ({tried}) failed "
            f"({first}); corrupt data, or it needs a decoder that is not installed"
            + (f": install {missing}" if missing else ""))


def _voi_range(ds: pydicom.Dataset) -> tuple[float, float] | None:
    """Output range of the VOI transform of ``ds`` (None when it has no VOI)."""
    if ds.get("VOILUTSequence"):
        bits = int(ds.VOILUTSequence[0].LUTDescriptor[2])
        return 0.0, float(2**bits - 1)
    if "WindowCenter" in ds and "WindowWidth" in ds:
        with np.errstate(over="ignore"):
            lo, hi = apply_voi_lut(np.array([-1e15, 1e15]), ds)
        return float(lo), float(hi)
    return None


def _dicom_gray(path: Path) -> np.ndarray:
    """Decode the first frame of a DICOM file to a windowed uint8 grayscale array."""
    try:
        ds = pydicom.dcmread(path, force=True)  # force: DICOM without preamble / file meta
        valid = any(key in ds for key in ("PixelData", "SOPClassUID", "Rows"))
    except Exception as err:  # pydicom raises many types on garbage
        raise ImageReadError(path, f"not a valid DICOM file: {err}") from None
    if not valid:
        raise ImageReadError(path, "not a valid DICOM file (no image attributes)")
    if "PixelData" not in ds:
        raise ImageReadError(path, "DICOM without pixel data")
    if not ds.file_meta.get("TransferSyntaxUID"):  # no file meta: use the encoding read
        implicit, little = ds.original_encoding
        ds.file_meta.TransferSyntaxUID = (
            ImplicitVRLittleEndian if implicit else ExplicitVRLittleEndian if little else ExplicitVRBigEndian
        )
    tsyntax = ds.file_meta.TransferSyntaxUID
    try:
        available = get_decoder(tsyntax).is_available
    except NotImplementedError:
        available = False
    if not available:
        try:
            missing = _missing_packages(get_decoder(tsyntax))
        except NotImplementedError:
            missing = ""
        raise ImageReadError(
            path, f"unsupported DICOM transfer syntax: {tsyntax.name} (no decoder installed"
            + (f"; install {missing})" if missing else ")")
        )
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).upper()
    try:
        arr = pydicom.pixels.pixel_array(ds, index=0)
        if arr.ndim == 3:  # colour: pydicom returns RGB
            rgb = arr.astype(np.float64)
            arr = rgb @ np.array([0.299, 0.587, 0.114])
            voi = None
        elif not photometric.startswith("MONOCHROME"):
            raise ImageReadError(
                path, f"unsupported DICOM photometric interpretation {photometric}"
            )
        else:
            arr = apply_modality_lut(arr, ds)
            voi = _voi_range(ds)
            if voi is not None:
                arr = apply_voi_lut(arr, ds)
    except ImageReadError:
        raise
    except Exception as err:  # pydicom raises many types for bad pixel data
        raise ImageReadError(path, _decode_failure(ds, tsyntax, err)) from None
    arr = np.asarray(arr, dtype=np.float64)
    lo, hi = voi if voi is not None else (arr.min(), arr.max())
    if hi <= lo:
        raise ImageReadError(path, "blank image (constant pixel value)")
    out = np.rint((np.clip(arr, lo, hi) - lo) * 255.0 / (hi - lo)).astype(np.uint8)
    return 255 - out if photometric == "MONOCHROME1" else out


def _to_uint8(arr: np.ndarray, path: Path) -> np.ndarray:
    """Scale a >8-bit array to uint8 by its own min-max; uint8 passes through."""
    if arr.dtype == np.uint8:
        return arr
    lo, hi = float(arr.min()), float(arr.max())
    if hi <= lo:
        raise ImageReadError(path, "blank image (constant pixel value)")
    scaled = (arr.astype(np.float64) - lo) * 255.0 / (hi - lo)
    return np.rint(scaled).astype(np.uint8)


def read_image(path: str | Path, min_size: int = 32) -> np.ndarray:
    """Read any supported image file as an 8-bit grayscale array.

    Args:
        path: PNG, JPEG, BMP, TIFF, GIF or DICOM file (format detected by content).
        min_size: Smallest accepted height and width in pixels.

    Returns:
        A ``(H, W)`` uint8 array.

    Raises:
        ImageReadError: For missing, empty, corrupt, non-image, too small or
            blank files; ``err.reason`` says which.
    """
    path = Path(path)
    _check_file(path)
    if is_dicom(path):
        img = _dicom_gray(path)
    else:
        img = _to_uint8(_pil_gray(path), path)
    height, width = img.shape
    if min(height, width) < min_size:
        raise ImageReadError(path, f"too small: {width}x{height} px < {min_size} px")
    if img.min() == img.max():
        raise ImageReadError(path, "blank image (constant pixel value)")
    return np.ascontiguousarray(img)


def read_mask(path: str | Path) -> np.ndarray:
    """Read a segmentation mask; every pixel above zero is foreground.

    Args:
        path: Mask image file (any format :func:`read_image` accepts but DICOM).

    Returns:
        A ``(H, W)`` bool array.

    Raises:
        ImageReadError: For missing, empty, corrupt or non-image files.
    """
    path = Path(path)
    _check_file(path)
    return _pil_gray(path) > 0


PHASH_SIZE = 16  # 16x16 DCT coefficients -> 256-bit perceptual hash


def image_hash(img: np.ndarray) -> tuple[str, str]:
    """Hash a decoded image, exactly and perceptually.

    Args:
        img: ``(H, W)`` uint8 array as returned by :func:`read_image`.

    Returns:
        ``(sha1, phash)``: SHA-1 hex of the shape and pixel bytes, and the 256-bit perceptual
        hash (``imagehash.phash`` with ``hash_size=16``) as 64 hex characters. 64 bits are too
        coarse for chest X-rays, which all share one global layout: on the real sample, re-encoded
        or resized copies stay within 10 of 256 bits while distinct films are 54 or more apart
        (phantoms: 26 or more); with 64 bits distinct phantoms came within 2 bits of each other.
    """
    img = np.ascontiguousarray(img, dtype=np.uint8)
    digest = hashlib.sha1(f"{img.shape[0]}x{img.shape[1]}:".encode())
    digest.update(img.tobytes())
    return digest.hexdigest(), str(imagehash.phash(Image.fromarray(img), hash_size=PHASH_SIZE))
