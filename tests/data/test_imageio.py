"""Tests of covidxray.data.imageio: every format reads right, every bad file is refused."""

from __future__ import annotations

import pickle

import numpy as np
import pydicom
import pytest
from PIL import Image

import fixtures_images as fx
from covidxray.data.imageio import ImageReadError, image_hash, read_image, read_mask, sniff_format

REF = fx.base_image()


def _minmax8(arr: np.ndarray) -> np.ndarray:
    arr = arr.astype(np.float64)
    return np.rint((arr - arr.min()) * 255 / (arr.max() - arr.min())).astype(np.uint8)


def _dicom_linear_window(x: np.ndarray, center: float, width: float, lo: float, hi: float):
    """DICOM PS3.3 C.11.2.1.2.1 LINEAR window to the range [lo, hi], then to 0..255."""
    c, w = center - 0.5, width - 1
    y = np.clip(((x - c) / w + 0.5), 0, 1) * (hi - lo) + lo
    return np.rint((y - lo) * 255 / (hi - lo)).astype(np.uint8)


@pytest.mark.parametrize("writer", [fx.write_png_gray8, fx.write_bmp, fx.write_png_la,
                                    fx.write_png_palette, fx.write_png_rgba])
def test_lossless_8bit_formats_keep_values(tmp_path, writer):
    img = read_image(writer(tmp_path / "img"))
    assert img.dtype == np.uint8 and img.shape == (fx.H, fx.W)
    np.testing.assert_array_equal(img, REF)  # RGBA: alpha ignored, even where alpha == 0


def test_rgb_png_uses_luma(tmp_path):
    img = read_image(fx.write_png_rgb(tmp_path / "rgb.png"))
    assert (img[40, 0], img[40, 10], img[40, 20]) == (76, 150, 29)  # 0.299/0.587/0.114 * 255
    np.testing.assert_array_equal(img[:40], REF[:40])


@pytest.mark.parametrize("writer", [fx.write_png16, fx.write_tiff16])
def test_16bit_scaled_by_image_minmax(tmp_path, writer):
    path = writer(tmp_path / "img16")
    assert Image.open(path).mode.startswith("I;16")
    img = read_image(path)
    assert img.dtype == np.uint8
    np.testing.assert_array_equal(img, _minmax8(fx.base_image16()))
    assert img.min() == 0 and img.max() == 255


@pytest.mark.parametrize("writer", [fx.write_jpeg, fx.write_jpeg_cmyk])
def test_jpeg_and_cmyk_close_to_reference(tmp_path, writer):
    img = read_image(writer(tmp_path / "img.jpg"))
    assert img.shape == (fx.H, fx.W) and img.dtype == np.uint8
    assert np.abs(img.astype(int) - REF).mean() < 2.0


def test_exif_orientation_applied(tmp_path):
    img = read_image(fx.write_jpeg_exif_rotated(tmp_path / "rot.jpg"))
    assert img.shape == (fx.W, fx.H)  # rotated 90 degrees clockwise
    assert img[:16, -12:].mean() > 240  # stored top-left bright block is now top-right
    assert img[:16, :12].mean() < 100
    assert np.abs(img.astype(int) - np.rot90(REF, k=-1)).mean() < 2.0


def test_content_detection_ignores_extension(tmp_path):
    png = fx.write_png_gray8(tmp_path / "really_png.jpg")
    dcm = fx.write_dicom_windowed(tmp_path / "dicom.dat")
    assert sniff_format(png) == "PNG" and sniff_format(dcm) == "DICOM"
    np.testing.assert_array_equal(read_image(png), REF)
    np.testing.assert_array_equal(read_image(dcm), read_image(fx.write_dicom_windowed(tmp_path / "a.dcm")))


def test_dicom_window_center_width(tmp_path):
    img = read_image(fx.write_dicom_windowed(tmp_path / "w.dcm"))
    raw = fx.dicom_ramp().astype(np.float64)
    np.testing.assert_array_equal(img, _dicom_linear_window(raw, 2048, 2048, 0, 4095))
    assert img[0, 0] == 255 and img[-1, 0] == 0  # raw 4000 above window, raw 320 below


def test_dicom_monochrome1_inverted(tmp_path):
    img = read_image(fx.write_dicom_mono1(tmp_path / "m1.dcm"))
    raw = fx.dicom_ramp()
    assert img[0, 0] == 0  # raw maximum (4000) comes out black
    assert img[-1, 0] == 255  # raw minimum comes out white
    np.testing.assert_array_equal(img, 255 - _minmax8(raw))


def test_dicom_modality_lut_before_window(tmp_path):
    img = read_image(fx.write_dicom_rescaled(tmp_path / "r.dcm"))
    rescaled = fx.dicom_ramp().astype(np.float64) * 2 - 1024
    lo, hi = -1024, 4095 * 2 - 1024
    np.testing.assert_array_equal(img, _dicom_linear_window(rescaled, 0.5, 1001, lo, hi))
    assert img[-1, 0] == 30  # raw 320 -> -384: inside the window, not clipped to 0


BAD = {name: (writer, reason) for name, (writer, reason) in fx.KINDS.items() if reason != "ok"}


@pytest.mark.parametrize("name", sorted(BAD))
def test_bad_files_raise_with_reason_and_path(tmp_path, name):
    writer, keyword = BAD[name]
    path = writer(tmp_path / name)
    with pytest.raises(ImageReadError) as info:
        read_image(path)
    assert keyword in info.value.reason
    assert str(path) in str(info.value) and info.value.path == str(path)


def test_exact_reasons(tmp_path):
    with pytest.raises(ImageReadError, match="too small: 10x10 px < 32 px"):
        read_image(fx.write_tiny(tmp_path / "tiny.png"))
    assert read_image(tmp_path / "tiny.png", min_size=8).shape == (10, 10)
    with pytest.raises(ImageReadError) as info:
        read_image(tmp_path / "missing.png")
    assert info.value.reason == "file not found"
    with pytest.raises(ImageReadError) as info:
        read_image(fx.write_constant(tmp_path / "c.png"))
    assert info.value.reason == "blank image (constant pixel value)"


def test_error_is_picklable():
    err = pickle.loads(pickle.dumps(ImageReadError("/x/a.png", "zero-byte file")))
    assert (err.path, err.reason, str(err)) == ("/x/a.png", "zero-byte file", "/x/a.png: zero-byte file")


def test_read_mask(tmp_path):
    mask = np.zeros((40, 50), np.uint8)
    mask[5:20, 10:30] = 255
    Image.fromarray(mask).save(tmp_path / "m.png")
    out = read_mask(tmp_path / "m.png")
    assert out.dtype == bool and out.sum() == 15 * 20
    Image.fromarray(np.zeros((40, 50), np.uint8)).save(tmp_path / "empty.png")
    assert read_mask(tmp_path / "empty.png").sum() == 0  # an empty mask is valid


def test_image_hash_exact_and_perceptual():
    sha_a, ph_a = image_hash(REF)
    sha_b, ph_b = image_hash(REF.copy())
    assert (sha_a, ph_a) == (sha_b, ph_b) and len(sha_a) == 40 and len(ph_a) == 64  # 256-bit phash
    brighter = np.clip(REF.astype(int) + 3, 0, 255).astype(np.uint8)
    sha_c, ph_c = image_hash(brighter)
    assert sha_c != sha_a
    assert bin(int(ph_a, 16) ^ int(ph_c, 16)).count("1") <= 16  # perceptually near-identical
    assert image_hash(REF.reshape(fx.W, fx.H))[0] != sha_a  # shape is part of the exact hash


def test_dicom_multiframe_uses_first_frame(tmp_path):
    frames = np.stack([fx.dicom_ramp(), 4000 - fx.dicom_ramp()])
    img = read_image(fx.write_dicom(tmp_path / "mf.dcm", frames))
    np.testing.assert_array_equal(img, _minmax8(fx.dicom_ramp()))


def test_dicom_extension_does_not_override_content(tmp_path):
    jpeg_named_dcm = fx.write_jpeg(tmp_path / "photo.dcm")
    assert sniff_format(jpeg_named_dcm) == "JPEG"
    assert np.abs(read_image(jpeg_named_dcm).astype(int) - REF).mean() < 2.0
    with pytest.raises(ImageReadError, match="not a valid DICOM file"):
        read_image(fx.write_text_as_png(tmp_path / "notes.dcm"))


def test_dicom_without_preamble_or_file_meta(tmp_path):
    ds = pydicom.dcmread(fx.write_dicom_windowed(tmp_path / "full.dcm"))
    bare = tmp_path / "bare.dcm"
    ds.file_meta = pydicom.dataset.FileMetaDataset()
    ds.preamble = None
    ds.save_as(bare, implicit_vr=True, little_endian=True)
    assert bare.read_bytes()[128:132] != b"DICM"
    np.testing.assert_array_equal(read_image(bare), read_image(tmp_path / "full.dcm"))


# --- issue 11 -------------------------------------------------------------------------------------


def test_12bit_jpeg_dicom_decodes_with_pylibjpeg():
    """A 12-bit JPEG (Extended) DICOM is decoded (pylibjpeg-libjpeg), not reported as corrupt."""
    from pydicom.data import get_testdata_file

    img = read_image(get_testdata_file("JPGExtended.dcm"))
    assert img.shape == (1024, 256) and img.dtype == np.uint8 and img.max() > img.min()


def test_undecodable_jpeg_dicom_names_the_missing_decoder(monkeypatch):
    """When no installed decoder reads the pixel data, the reason names the package that could."""
    from pydicom.data import get_testdata_file

    # pydicom's JPEG-lossy.dcm: 12-bit JPEG that only GDCM reads (libjpeg rejects its markers)
    with pytest.raises(ImageReadError) as err:
        read_image(get_testdata_file("JPEG-lossy.dcm"))
    assert "12-bit" in err.value.reason and "python-gdcm" in err.value.reason
    assert "corrupt DICOM pixel data" not in err.value.reason

    import covidxray.data.imageio as io_mod

    class NoDecoder:
        is_available = False
        missing_dependencies = ["pylibjpeg - requires pylibjpeg>=2.0 and pylibjpeg-libjpeg>=2.1"]

    monkeypatch.setattr(io_mod, "get_decoder", lambda ts: NoDecoder())
    with pytest.raises(ImageReadError, match="no decoder installed; install pylibjpeg with pylibjpeg-libjpeg"):
        read_image(get_testdata_file("JPGExtended.dcm"))
