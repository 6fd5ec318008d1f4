"""Tests of the phantom generator: determinism, masks, lesion placement, confounder, dataset files."""

from __future__ import annotations

import cv2
import numpy as np
import pandas as pd
import pytest

from covidxray.data.phantoms import KNOWN_CLASSES, MANIFEST_COLUMNS, generate_dataset, make_phantom

LESION_CLASSES = ("COVID-19", "Viral Pneumonia", "Lung Opacity")


def phantom(seed: int, label: str, size: int = 128, **kw):
    return make_phantom(np.random.default_rng(seed), label, size, **kw)


def lung_halves(ph) -> list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
    """Per lung: (lateral-half, medial-half, lower-half, upper-half) boolean masks of that lung."""
    n, comp = cv2.connectedComponents(ph.lung_mask.astype(np.uint8))
    assert n == 3, "expected exactly two lung fields"
    size = ph.image.shape[0]
    cols, rows = np.arange(size)[None, :], np.arange(size)[:, None]
    out = []
    for k in (1, 2):
        m = comp == k
        ys, xs = np.nonzero(m)
        xmid, ymid = (xs.min() + xs.max()) / 2, (ys.min() + ys.max()) / 2
        lateral = (cols < xmid) if xs.mean() < size / 2 else (cols > xmid)
        out.append((m & lateral, m & ~lateral, m & (rows > ymid), m & (rows <= ymid)))
    return out


@pytest.mark.parametrize("label", KNOWN_CLASSES)
def test_same_seed_same_phantom_and_different_seed_differs(label):
    a, b, c = phantom(7, label), phantom(7, label), phantom(8, label)
    for name in ("image", "lung_mask", "lesion_mask", "marker_mask"):
        assert np.array_equal(getattr(a, name), getattr(b, name))
    assert not np.array_equal(a.image, c.image)
    assert not np.array_equal(a.lung_mask, c.lung_mask)


@pytest.mark.parametrize("size", [64, 97, 256, 512])
def test_shapes_dtypes_and_plausible_anatomy(size):
    for label in KNOWN_CLASSES:
        ph = phantom(size, label, size)
        assert ph.image.shape == (size, size) and ph.image.dtype == np.uint8
        for m in (ph.lung_mask, ph.lesion_mask, ph.marker_mask):
            assert m.shape == (size, size) and m.dtype == bool
        assert 0.15 < ph.lung_mask.mean() < 0.5
        assert len(lung_halves(ph)) == 2
        img = ph.image.astype(float)
        # radiolucent lungs: darker than the body around them
        assert img[ph.lung_mask].mean() + 40 < img[~ph.lung_mask & (img > 20)].mean()
        assert ph.image.std() > 30


def test_anatomy_does_not_depend_on_label():
    """Only lesions carry the class: the same seed gives the same lungs and anatomy for every class."""
    normal = phantom(3, "Normal", 128)
    for label in LESION_CLASSES:
        other = phantom(3, label, 128)
        assert np.array_equal(other.lung_mask, normal.lung_mask)
        for key in ("cx", "scale", "heart", "rotation", "half_width"):
            assert other.meta[key] == normal.meta[key]


def test_lesions_inside_lungs_and_normal_empty():
    for seed in range(10):
        for label in KNOWN_CLASSES:
            ph = phantom(seed, label, 96)
            assert not (ph.lesion_mask & ~ph.lung_mask).any()
            if label == "Normal":
                assert not ph.lesion_mask.any()
            else:
                assert ph.lesion_mask.sum() > 20


def test_covid_lesions_bilateral_lower_and_peripheral():
    lateral = medial = lower = upper = 0
    for seed in range(15):
        ph = phantom(seed, "COVID-19")
        halves = lung_halves(ph)
        assert all((ph.lesion_mask & (lat | med)).any() for lat, med, _, _ in halves), "not bilateral"
        for lat, med, low, up in halves:
            lateral += (ph.lesion_mask & lat).sum()
            medial += (ph.lesion_mask & med).sum()
            lower += (ph.lesion_mask & low).sum()
            upper += (ph.lesion_mask & up).sum()
    assert lateral > 3 * medial
    assert lower > 3 * upper


def test_viral_lesions_bilateral_and_perihilar():
    lateral = medial = 0
    for seed in range(15):
        ph = phantom(seed, "Viral Pneumonia")
        halves = lung_halves(ph)
        assert all((ph.lesion_mask & (lat | med)).any() for lat, med, _, _ in halves), "not bilateral"
        lateral += sum((ph.lesion_mask & lat).sum() for lat, _, _, _ in halves)
        medial += sum((ph.lesion_mask & med).sum() for _, med, _, _ in halves)
    assert medial > 2 * lateral


def test_lung_opacity_is_one_unilateral_region():
    for seed in range(8):
        ph = phantom(seed, "Lung Opacity")
        in_lung = [(ph.lesion_mask & (lat | med)).sum() for lat, med, _, _ in lung_halves(ph)]
        assert min(in_lung) == 0 < max(in_lung)


@pytest.mark.parametrize("label", LESION_CLASSES)
def test_lesion_contrast_falls_with_difficulty(label):
    """Mean intensity inside minus outside the lesion (within the lungs) shrinks as difficulty grows.

    The same seeds at every difficulty give the same anatomy and lesion placement; difficulty 1e6
    (no visible lesion) is the anatomical baseline of those regions.
    """
    contrasts = []
    for difficulty in (0.5, 1.0, 2.0, 4.0, 1e6):
        diffs = []
        for seed in range(4):
            ph = phantom(seed, label, difficulty=difficulty)
            img = ph.image.astype(float)
            diffs.append(img[ph.lesion_mask].mean() - img[ph.lung_mask & ~ph.lesion_mask].mean())
        contrasts.append(np.mean(diffs))
    assert contrasts == sorted(contrasts, reverse=True)
    signal = np.array(contrasts[:4]) - contrasts[4]
    assert signal[1] > 12  # difficulty 1: clearly visible
    assert signal[1] > 1.5 * signal[2] and signal[2] > 1.5 * signal[3]


def test_marker_changes_only_its_box_and_stays_outside_lungs():
    for seed in range(6):
        plain, marked = phantom(seed, "Normal"), phantom(seed, "Normal", marker=True)
        assert not plain.marker_mask.any() and marked.marker_mask.any()
        assert not (marked.marker_mask & marked.lung_mask).any()
        differs = plain.image != marked.image
        assert differs.any() and not (differs & ~marked.marker_mask).any()
        x0, y0, x1, y1 = marked.meta["marker_box"]
        assert marked.marker_mask[y0:y1, x0:x1].all() and marked.marker_mask.sum() == (x1 - x0) * (y1 - y0)


def test_confounder_strength_one_and_zero(tmp_path):
    classes = ("COVID-19", "Normal", "Viral Pneumonia")
    full = generate_dataset(tmp_path / "p1", n_per_class=20, size=64, seed=1, confounder="marker",
                            confounder_strength=1.0)
    assert (full["marker"] == (full["label"] == "COVID-19").astype(int)).all()
    zero = generate_dataset(tmp_path / "p0", n_per_class=20, size=64, seed=1, confounder="marker",
                            confounder_strength=0.0)
    rates = zero.groupby("label")["marker"].mean()
    assert set(rates.index) == set(classes)
    assert all(0.2 <= r <= 0.8 for r in rates) and 0.35 <= zero["marker"].mean() <= 0.65
    for df, root in ((full, tmp_path / "p1"), (zero, tmp_path / "p0")):
        for row in df.itertuples():
            mask = cv2.imread(str(root / row.marker_mask), cv2.IMREAD_GRAYSCALE)
            lung = cv2.imread(str(root / row.lung_mask), cv2.IMREAD_GRAYSCALE)
            assert mask.any() == bool(row.marker) == (row.marker_box != "")
            assert not (mask & lung).any()


def test_generate_dataset_tree_manifest_and_determinism(tmp_path):
    df = generate_dataset(tmp_path / "a", n_per_class=3, size=64, seed=4)
    assert list(df.columns) == list(MANIFEST_COLUMNS) and len(df) == 9
    assert df["label"].value_counts().to_dict() == {"COVID-19": 3, "Normal": 3, "Viral Pneumonia": 3}
    assert df["patient_id"].is_unique and (df["source"] == "phantom").all() and (df["seed"] == 4).all()
    assert (df["marker"] == 0).all() and (df["marker_mask"].fillna("") == "").all()
    on_disk = pd.read_csv(tmp_path / "a" / "manifest.csv", keep_default_na=False)
    assert on_disk[["path", "label", "patient_id", "lesion_mask"]].equals(df[["path", "label", "patient_id",
                                                                              "lesion_mask"]])
    for row in df.itertuples():
        assert row.path.startswith(f"{row.label}/")
        img = cv2.imread(str(tmp_path / "a" / row.path), cv2.IMREAD_UNCHANGED)
        assert img.shape == (64, 64) and img.dtype == np.uint8
        lung = cv2.imread(str(tmp_path / "a" / row.lung_mask), cv2.IMREAD_UNCHANGED)
        lesion = cv2.imread(str(tmp_path / "a" / row.lesion_mask), cv2.IMREAD_UNCHANGED)
        assert set(np.unique(lung)) == {0, 255} and set(np.unique(lesion)) <= {0, 255}
        assert (lesion.any()) == (row.label != "Normal") and not (lesion & ~lung).any()
    assert not (tmp_path / "a" / "masks" / "markers").exists()
    # same seed, other class order, two worker processes: byte-identical files
    df2 = generate_dataset(tmp_path / "b", n_per_class=3, size=64, seed=4, workers=2,
                           classes=("Viral Pneumonia", "COVID-19", "Normal"))
    assert sorted(df2["path"]) == sorted(df["path"])
    for rel in list(df["path"]) + list(df["lung_mask"]) + list(df["lesion_mask"]):
        assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes()
    df3 = generate_dataset(tmp_path / "c", n_per_class=3, size=64, seed=5)
    assert (tmp_path / "a" / df["path"][0]).read_bytes() != (tmp_path / "c" / df3["path"][0]).read_bytes()


def test_lung_opacity_class_on_request(tmp_path):
    df = generate_dataset(tmp_path, n_per_class=2, size=64, classes=("Normal", "Lung Opacity"))
    assert df["label"].tolist() == ["Normal", "Normal", "Lung Opacity", "Lung Opacity"]
    assert (tmp_path / "Lung Opacity").is_dir()


def test_bad_arguments_raise_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="Pneumothorax"):
        make_phantom(np.random.default_rng(0), "Pneumothorax")
    with pytest.raises(ValueError, match="Bacterial"):
        generate_dataset(tmp_path, n_per_class=1, classes=("Normal", "Bacterial"))
    with pytest.raises(ValueError, match="difficulty"):
        make_phantom(np.random.default_rng(0), "Normal", difficulty=0)
    with pytest.raises(ValueError, match="size"):
        make_phantom(np.random.default_rng(0), "Normal", size=32)
    with pytest.raises(ValueError, match="confounder"):
        generate_dataset(tmp_path, n_per_class=1, confounder="ruler")
    with pytest.raises(ValueError, match="confounder_strength"):
        generate_dataset(tmp_path, n_per_class=1, confounder="marker", confounder_strength=1.5)
    assert not any(tmp_path.iterdir())
