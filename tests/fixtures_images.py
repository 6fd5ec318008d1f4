"""Builders of small image files of every supported (and broken) kind for tests.

Each ``write_*`` function writes one file at ``path`` and returns it. The reference
content is :func:`base_image`: a 48x64 horizontal ramp with a bright 12x16 block in
the top-left corner, so orientation and values can be checked after reading.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pydicom
from PIL import Image
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.uid import ExplicitVRLittleEndian, JPEGLSLossless, generate_uid

H, W = 48, 64
BRIGHT = 250
DX_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.1.1"  # Digital X-Ray Image Storage


def base_image() -> np.ndarray:
    """Return the 48x64 uint8 reference image (ramp 20..200, bright top-left block)."""
    img = np.tile(np.linspace(20, 200, W).round().astype(np.uint8), (H, 1))
    img[:12, :16] = BRIGHT
    return img


def base_image16() -> np.ndarray:
    """Return the reference image on a 16-bit scale (1000 + 200 * value)."""
    return 1000 + base_image().astype(np.uint16) * 200


def _save(img: Image.Image, path: Path, **kwargs) -> Path:
    img.save(path, **kwargs)
    return path


def write_png_gray8(path: Path) -> Path:
    return _save(Image.fromarray(base_image()), path, format="PNG")


def write_png16(path: Path) -> Path:
    return _save(Image.fromarray(base_image16()), path, format="PNG")


def write_tiff16(path: Path) -> Path:
    return _save(Image.fromarray(base_image16()), path, format="TIFF")


def write_png_rgb(path: Path) -> Path:
    """Gray reference image with a pure red / green / blue strip in row 40, cols 0-29."""
    rgb = np.repeat(base_image()[:, :, None], 3, axis=2)
    rgb[40, 0:10] = (255, 0, 0)
    rgb[40, 10:20] = (0, 255, 0)
    rgb[40, 20:30] = (0, 0, 255)
    return _save(Image.fromarray(rgb), path, format="PNG")


def write_png_rgba(path: Path) -> Path:
    """Gray reference image as RGBA with the left half fully transparent."""
    gray = base_image()
    alpha = np.full_like(gray, 255)
    alpha[:, : W // 2] = 0
    return _save(Image.fromarray(np.dstack([gray, gray, gray, alpha])), path, format="PNG")


def write_png_la(path: Path) -> Path:
    gray = base_image()
    return _save(Image.fromarray(np.dstack([gray, np.full_like(gray, 128)])), path, format="PNG")


def write_png_palette(path: Path) -> Path:
    """Palette image whose entry i is gray level 255 - i (indices = 255 - reference)."""
    img = Image.fromarray(255 - base_image()).convert("P")
    img.putpalette([v for i in range(256) for v in (255 - i,) * 3])
    return _save(img, path, format="PNG")


def write_jpeg(path: Path) -> Path:
    return _save(Image.fromarray(base_image()), path, format="JPEG", quality=95)


def write_jpeg_cmyk(path: Path) -> Path:
    rgb = Image.fromarray(base_image()).convert("RGB")
    return _save(rgb.convert("CMYK"), path, format="JPEG", quality=95)


def write_jpeg_exif_rotated(path: Path) -> Path:
    """Reference image stored as is, with EXIF orientation 6 (display rotated 90° CW)."""
    exif = Image.Exif()
    exif[0x0112] = 6
    return _save(Image.fromarray(base_image()), path, format="JPEG", quality=95, exif=exif)


def write_bmp(path: Path) -> Path:
    return _save(Image.fromarray(base_image()), path, format="BMP")


def write_dicom(path: Path, pixels: np.ndarray, photometric: str = "MONOCHROME2",
                bits_stored: int = 12, with_pixels: bool = True, **attrs) -> Path:
    """Write an uncompressed (Explicit VR Little Endian) 16-bit DX DICOM file.

    Args:
        path: Output file.
        pixels: ``(H, W)`` uint16 array, or ``(frames, H, W)`` for multi-frame.
        photometric: PhotometricInterpretation.
        bits_stored: BitsStored (HighBit follows).
        with_pixels: False leaves out the PixelData element.
        **attrs: Extra DICOM attributes, e.g. ``WindowCenter=2048``.

    Returns:
        ``path``.
    """
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = DX_SOP_CLASS
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID = DX_SOP_CLASS
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "DX"
    ds.Rows, ds.Columns = pixels.shape[-2:]
    if pixels.ndim == 3:
        ds.NumberOfFrames = pixels.shape[0]
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated = 16
    ds.BitsStored = bits_stored
    ds.HighBit = bits_stored - 1
    ds.PixelRepresentation = 0
    for key, value in attrs.items():
        setattr(ds, key, value)
    if with_pixels:
        ds.PixelData = pixels.astype("<u2").tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path


def dicom_ramp() -> np.ndarray:
    """12-bit DICOM test pixels: reference image * 16 (0..4000), brightest top-left."""
    return base_image().astype(np.uint16) * 16


def write_dicom_windowed(path: Path) -> Path:
    """MONOCHROME2, window centre 2048 / width 2048: raw <1024 -> 0, >=3072 -> 255."""
    return write_dicom(path, dicom_ramp(), WindowCenter=2048, WindowWidth=2048)


def write_dicom_mono1(path: Path) -> Path:
    """MONOCHROME1 without window: the raw maximum (bright block) must come out 0."""
    return write_dicom(path, dicom_ramp(), photometric="MONOCHROME1")


def write_dicom_rescaled(path: Path) -> Path:
    """Rescale 2 * raw - 1024 (HU-like) and window 0 / 1001 in rescaled units.

    Rescaled = 2 * raw - 1024, so raw 0..4000 -> -1024..6976; the window maps
    rescaled <= -500 to 0 and > 500 to 255 (raw <= 262 dark, raw > 762 bright).
    """
    return write_dicom(path, dicom_ramp(), RescaleSlope=2, RescaleIntercept=-1024,
                       WindowCenter=0.5, WindowWidth=1001)


def write_dicom_no_pixels(path: Path) -> Path:
    return write_dicom(path, dicom_ramp(), with_pixels=False)


def write_dicom_jpegls(path: Path) -> Path:
    """DICOM declaring JPEG-LS compression with junk data (pylibjpeg-libjpeg is tried and fails)."""
    write_dicom(path, dicom_ramp())
    ds = pydicom.dcmread(path)
    ds.file_meta.TransferSyntaxUID = JPEGLSLossless
    ds.PixelData = encapsulate([b"\xff\xd8\xff\xf7" + b"\0" * 60])
    ds["PixelData"].VR = "OB"
    ds.save_as(path, enforce_file_format=True)
    return path


def _noise_png_bytes(fmt: str) -> bytes:
    rng = np.random.default_rng(0)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (64, 64), dtype=np.uint8)).save(buf, format=fmt)
    return buf.getvalue()


def write_truncated_png(path: Path) -> Path:
    data = _noise_png_bytes("PNG")
    path.write_bytes(data[: len(data) // 2])
    return path


def write_truncated_jpeg(path: Path) -> Path:
    data = _noise_png_bytes("JPEG")
    path.write_bytes(data[: len(data) // 2])
    return path


def write_zero_byte(path: Path) -> Path:
    path.write_bytes(b"")
    return path


def write_text_as_png(path: Path) -> Path:
    path.write_text("this is not an image\n")
    return path


def write_tiny(path: Path) -> Path:
    return _save(Image.fromarray(base_image()[20:30, :10]), path, format="PNG")


def write_constant(path: Path) -> Path:
    return _save(Image.fromarray(np.full((H, W), 77, np.uint8)), path, format="PNG")


# file name -> (writer, expected outcome: "ok" or a keyword of the quarantine reason)
KINDS = {
    "gray8.png": (write_png_gray8, "ok"),
    "gray16.png": (write_png16, "ok"),
    "rgb.png": (write_png_rgb, "ok"),
    "rgba.png": (write_png_rgba, "ok"),
    "la.png": (write_png_la, "ok"),
    "palette.png": (write_png_palette, "ok"),
    "photo.jpg": (write_jpeg, "ok"),
    "cmyk.jpg": (write_jpeg_cmyk, "ok"),
    "rotated.jpg": (write_jpeg_exif_rotated, "ok"),
    "image.bmp": (write_bmp, "ok"),
    "image16.tif": (write_tiff16, "ok"),
    "png_named.jpg": (write_png_gray8, "ok"),
    "windowed.dcm": (write_dicom_windowed, "ok"),
    "mono1.dcm": (write_dicom_mono1, "ok"),
    "rescaled.dcm": (write_dicom_rescaled, "ok"),
    "dicom_no_extension.dat": (write_dicom_windowed, "ok"),
    "no_pixels.dcm": (write_dicom_no_pixels, "DICOM without pixel data"),
    "jpegls.dcm": (write_dicom_jpegls, "cannot decode JPEG-LS Lossless Image Compression pixel data"),
    "truncated.png": (write_truncated_png, "truncated or corrupt"),
    "truncated.jpg": (write_truncated_jpeg, "truncated or corrupt"),
    "empty.png": (write_zero_byte, "zero-byte file"),
    "text.png": (write_text_as_png, "not an image"),
    "tiny.png": (write_tiny, "too small"),
    "constant.png": (write_constant, "blank image"),
}


def write_bad_input_folder(folder: str | Path) -> dict[str, str]:
    """Write one file of every kind in :data:`KINDS` into ``folder``.

    Args:
        folder: Target directory (created if missing).

    Returns:
        Mapping file name -> expected outcome: ``"ok"`` or a keyword that the
        quarantine reason contains.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for name, (writer, _) in KINDS.items():
        writer(folder / name)
    return {name: expected for name, (_, expected) in KINDS.items()}


def write_noise_png(path: str | Path, seed: int, size: int = 40) -> Path:
    """Write a distinct random gray PNG (noise: no two seeds are near duplicates)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (size, size), dtype=np.uint8)).save(path)
    return path


def write_class_folders(root: str | Path, n_per_class: int, seed: int = 0,
                        classes: tuple[str, ...] = ("COVID-19", "Normal", "Viral Pneumonia")) -> Path:
    """``root/<class>/<class-slug>-<i>.png``: ``n_per_class`` distinct noise PNGs per class."""
    root = Path(root)
    for c, cls in enumerate(classes):
        for i in range(n_per_class):
            write_noise_png(root / cls / f"{cls.split()[0].lower()}-{i:03d}.png", seed + 1000 * c + i)
    return root
