"""Tests for covidxray.data.duplicates and covidxray.data.split: duplicate groups, leak-free splits."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from covidxray.data import duplicates as D
from covidxray.data import split as S
from covidxray.paths import shared_cxr_dev

CLASSES = ["COVID-19", "Normal", "Viral Pneumonia"]


def _flip(phash: str, bits: list[int]) -> str:
    value = int(phash, 16)
    for b in bits:
        value ^= 1 << int(b)
    return f"{value:016x}"


def _random_hashes(n: int, rng: np.random.Generator) -> list[str]:
    """n 64-bit hashes, pairwise more than 12 bits apart (random ones are ~32 apart)."""
    out: list[str] = []
    while len(out) < n:
        cand = f"{int(rng.integers(0, 2**63)) * 2 + int(rng.integers(0, 2)):016x}"
        if all(bin(int(cand, 16) ^ int(h, 16)).count("1") > 12 for h in out):
            out.append(cand)
    return out


def _manifest(n_per_class: int = 100, seed: int = 0, patient_every: int = 4) -> pd.DataFrame:
    """Manifest with hash columns, multi-image patients, and planted exact/near duplicates.

    Every ``patient_every``-th image of a class shares a patient with the next one; images
    5k+1 repeat image 5k exactly (sha1 and phash), images 5k+2 are 2 bits from image 5k. Rows
    come in blocks of 5 of one class, so a duplicate never carries another label.
    """
    rng = np.random.default_rng(seed)
    n = n_per_class * len(CLASSES)
    phash = _random_hashes(n, rng)
    rows = []
    for i in range(n):
        label = CLASSES[(i // 5) % len(CLASSES)]
        k = i // len(CLASSES)
        patient = f"{label}:p{k // 2}" if k % patient_every in (0, 1) else ""
        rows.append({"path": f"{label}/img{i:05d}.png", "label": label, "patient_id": patient,
                     "sha1": f"{i:040x}", "phash": phash[i]})
    df = pd.DataFrame(rows)
    base = np.arange(0, n - 2, 5)
    df.loc[base + 1, ["sha1", "phash"]] = df.loc[base, ["sha1", "phash"]].to_numpy()
    df.loc[base + 2, "phash"] = [_flip(h, [3, 40]) for h in df.loc[base, "phash"]]
    return df


def _assert_no_leak(splits: pd.DataFrame) -> None:
    pid = splits["patient_id"].fillna("")
    assert (splits[pid != ""].groupby("patient_id")["split"].nunique() == 1).all()
    assert (splits.groupby("sha1")["split"].nunique() == 1).all()
    assert (splits.groupby("group")["split"].nunique() == 1).all()


def test_duplicate_groups_exact_near_transitive_and_unrelated():
    a, b, c = _random_hashes(3, np.random.default_rng(1))
    rows = [
        ("a", a), ("a", a),                             # 0,1 exact duplicates
        ("a1", _flip(a, [0])), ("a3", _flip(a, [5, 9, 60])),  # 2,3 near: 1 and 3 bits
        ("b", b), ("b3", _flip(b, [1, 2, 3])), ("b6", _flip(b, [1, 2, 3, 4, 5, 6])),  # 4-6 chain 3+3
        ("a5", _flip(a, [10, 11, 12, 13, 14])),          # 7: 5 bits from a, > threshold 4
        ("c", c),                                        # 8 unrelated
    ]
    df = pd.DataFrame([{"sha1": s * 8, "phash": p} for s, p in rows])
    g = D.duplicate_groups(df).tolist()
    assert g[0] == g[1] == g[2] == g[3]
    assert g[4] == g[5] == g[6]  # b ~ b3 ~ b6 although b and b6 are 6 bits apart
    assert len({g[0], g[4], g[7], g[8]}) == 4
    assert D.duplicate_groups(df, near_dup_threshold=5)[7] == g[0]
    exact_only = D.duplicate_groups(df, near_dup_threshold=0).tolist()
    assert exact_only[0] == exact_only[1] and len(set(exact_only)) == 8
    assert D.duplicate_stats(df) == {"exact_groups": 1, "near_groups": 2, "images_in_dup_groups": 7,
                                     "multi_image_patients": 0}
    with pytest.raises(ValueError, match="near_dup_threshold"):
        D.duplicate_groups(df, near_dup_threshold=-1)


def test_assign_groups_joins_patients_and_duplicates():
    a, b, c, d = _random_hashes(4, np.random.default_rng(2))
    df = pd.DataFrame({
        "patient_id": ["P1", "P1", "", "", "", np.nan],
        "sha1": ["1" * 40, "2" * 40, "3" * 40, "4" * 40, "5" * 40, "6" * 40],
        "phash": [a, b, _flip(b, [7, 8]), c, d, _flip(d, [0, 1, 2, 3, 4, 5, 6])],
    })
    g = D.assign_groups(df).tolist()
    assert g[0] == g[1] == g[2]  # two images of P1 plus a near duplicate of one of them
    assert len(set(g)) == 4  # empty/NaN patient ids never join rows


def test_near_duplicate_pairs_match_brute_force_across_chunks():
    rng = np.random.default_rng(3)
    base = [f"{int(x):016x}" for x in rng.integers(0, 2**63, 60)]
    hashes = base + [_flip(h, list(rng.choice(64, size=int(rng.integers(1, 8)), replace=False))) for h in base]
    ints = [int(h, 16) for h in hashes]
    brute = {(i, j) for i in range(len(ints)) for j in range(i + 1, len(ints))
             if bin(ints[i] ^ ints[j]).count("1") <= 4}
    for chunk in (1, 7 * len(hashes), 1 << 22):
        assert set(map(tuple, D.near_duplicate_pairs(hashes, 4, chunk=chunk).tolist())) == brute


def test_make_splits_has_no_leak_and_matches_targets():
    df = _manifest(200)
    out = S.make_splits(df, val=0.15, test=0.15, seed=0)
    assert list(out.index) == list(df.index) and {"group", "split"} <= set(out.columns)
    _assert_no_leak(out)
    shares = pd.crosstab(out["label"], out["split"], normalize="index")
    for split, target in (("train", 0.70), ("val", 0.15), ("test", 0.15)):
        assert np.allclose(shares[split], target, atol=0.02), shares
    report = S.check_leakage(out)
    assert report.ok and report.details == []


@settings(max_examples=25, deadline=None)
@given(n=st.integers(20, 60), seed=st.integers(0, 1000), patient_every=st.integers(2, 6),
       val=st.sampled_from([0.1, 0.15, 0.2]), test=st.sampled_from([0.1, 0.15, 0.25]))
def test_make_splits_invariants(n, seed, patient_every, val, test):
    out = S.make_splits(_manifest(n, seed, patient_every), val=val, test=test, seed=seed)
    _assert_no_leak(out)
    assert S.check_leakage(out).ok
    assert set(out["split"]) == {"train", "val", "test"}


def test_determinism_row_order_and_seed():
    df = _manifest(100)
    first = S.make_splits(df, seed=7)
    again = S.make_splits(df, seed=7)
    pd.testing.assert_frame_equal(first, again)
    shuffled = S.make_splits(df.sample(frac=1, random_state=11), seed=7)
    pd.testing.assert_frame_equal(shuffled.loc[df.index], first)
    other = S.make_splits(df, seed=8)
    assert (other["split"] != first["split"]).mean() > 0.2


def test_check_leakage_detects_planted_leaks(tmp_path):
    out = S.make_splits(_manifest(100), seed=0)
    other = {"train": "val", "val": "test", "test": "train"}
    leak = out.copy()
    plain = leak.index % 5 > 2  # rows outside the planted duplicate triples 5k, 5k+1, 5k+2
    moved = leak.index[plain & (leak["patient_id"] != "")][0]
    pid = leak.at[moved, "patient_id"]
    leak.at[moved, "split"] = other[leak.at[moved, "split"]]
    copies = leak.index[leak["sha1"].duplicated() & (leak["patient_id"] == "")]
    exact = next(i for i in copies if leak.at[i, "group"] != leak.at[moved, "group"])
    leak.at[exact, "split"] = other[leak.at[exact, "split"]]
    csv = tmp_path / "splits.csv"
    leak.drop(columns="group").to_csv(csv, index=False)  # the check must not need `group`
    report = S.check_leakage(csv, recompute=False)  # fictional images: trust the hash columns
    assert not report.ok
    assert report.n_patients_shared == 1
    assert report.n_exact_dups_shared == 1
    assert report.n_near_dups_shared == 1  # image 5k+2 is 2 bits from the moved exact pair
    assert report.n_groups_shared == 2
    assert any(pid in d for d in report.details)
    text = S.format_summary(S.split_summary(leak), report)
    assert "LEAKAGE" in text and f"patient {pid}" in text


def test_split_summary_counts_add_up():
    out = S.make_splits(_manifest(60), seed=3)
    summary = S.split_summary(out)
    parts = summary.loc[["train", "val", "test"]]
    assert summary.loc["total", "images"] == len(out) == parts["images"].sum()
    assert (parts[CLASSES].sum(axis=1) == parts["images"]).all()
    assert (summary.loc["total", CLASSES] == out["label"].value_counts()[CLASSES]).all()
    assert summary.loc["total", "groups"] == out["group"].nunique() == parts["groups"].sum()
    n_patients = out.loc[out["patient_id"] != "", "patient_id"].nunique()
    assert summary.loc["total", "patients"] == n_patients == parts["patients"].sum()
    text = S.format_summary(summary, S.check_leakage(out))
    assert "OK" in text and "share of each class" in text


@pytest.mark.parametrize("val,test,msg", [
    (1.0, 0.1, "val fraction must be in"), (0.1, -0.1, "test fraction must be in"),
    (0.5, 0.5, "val \\+ test must be < 1"), (0.6, 0.45, "val \\+ test must be < 1"),
])
def test_invalid_fractions(val, test, msg):
    with pytest.raises(ValueError, match=msg):
        S.make_splits(_manifest(10), val=val, test=test)


def test_bad_input_errors_are_clear():
    df = _manifest(10)
    with pytest.raises(ValueError, match="have no label"):
        S.make_splits(df.assign(label=[""] + list(df["label"][1:])))
    bad = df.copy()
    bad.loc[4, "phash"] = "xyz"
    with pytest.raises(ValueError, match=r"row 4 .*img00004.*not 16 hex"):
        S.make_splits(bad)
    with pytest.raises(ValueError, match=r"lacks column\(s\) \['split'\]"):
        S.check_leakage(df)
    with pytest.raises(FileNotFoundError, match="nothing.csv: split CSV not found"):
        S.split_summary("nothing.csv")


def test_tiny_class_raises_or_allows_empty_split():
    df = _manifest(40)
    tiny = pd.concat([df, df.head(2).assign(label="Lung Opacity", patient_id="",
                                            sha1=["a" * 40, "b" * 40],
                                            phash=_random_hashes(2, np.random.default_rng(99)))])
    tiny = tiny.reset_index(drop=True)
    with pytest.raises(ValueError, match=r"class 'Lung Opacity' has only 2 independent group\(s\) \(2 images\)"):
        S.make_splits(tiny)
    out = S.make_splits(tiny, allow_empty=True)
    assert out.loc[out["label"] == "Lung Opacity", "split"].nunique() == 2
    nine = pd.DataFrame({"label": CLASSES * 3, "sha1": [f"{i:040x}" for i in range(9)],
                         "phash": _random_hashes(9, np.random.default_rng(5))})
    three = S.make_splits(nine, val=0.15, test=0.15)  # 3 independent images per class suffice
    assert (pd.crosstab(three["label"], three["split"]) == 1).all().all()


def test_hashes_computed_from_real_pngs(tmp_path):
    from PIL import Image

    pytest.importorskip("covidxray.data.imageio")
    rng = np.random.default_rng(0)
    rows = []
    for label in CLASSES:
        (tmp_path / label).mkdir()
        for k in range(4):
            img = (rng.random((64, 64)) * 255).astype(np.uint8)
            rel = f"{label}/{k}.png"
            Image.fromarray(img).save(tmp_path / rel)
            rows.append({"path": rel, "label": label, "patient_id": ""})
        # an exact re-encode (same pixels, other file) and a slightly brightened copy
        Image.fromarray(img).save(tmp_path / f"{label}/copy.png", compress_level=1)
        Image.fromarray(np.clip(img.astype(int) + 3, 0, 255).astype(np.uint8)).save(tmp_path / f"{label}/bright.png")
        rows += [{"path": f"{label}/copy.png", "label": label, "patient_id": ""},
                 {"path": str(tmp_path / f"{label}/bright.png"), "label": label, "patient_id": ""}]
    df = pd.DataFrame(rows)
    out = S.make_splits(df, val=0.2, test=0.2, root=tmp_path)
    assert out["phash"].str.fullmatch("[0-9a-f]{64}").all() and out["sha1"].str.len().eq(40).all()
    for label in CLASSES:
        family = out[out["path"].str.contains(f"{label}/(?:3|copy|bright)")]
        assert family["group"].nunique() == 1 and family["split"].nunique() == 1
        assert family["sha1"].iloc[0] == family["sha1"].iloc[1]  # decoded content, not file bytes
    out.drop(columns=["sha1", "phash"]).to_csv(tmp_path / "splits.csv", index=False)
    assert S.check_leakage(tmp_path / "splits.csv").ok  # recomputes hashes relative to the CSV
    with pytest.raises(FileNotFoundError, match="missing.png"):
        S.make_splits(pd.DataFrame([{"path": "missing.png", "label": "Normal"}]), root=tmp_path)


@pytest.mark.data
def test_cxr_dev_split_is_leak_free(capsys):
    root = shared_cxr_dev()
    if root is None:
        pytest.skip("real CXR sample ../shared/data/cxr-dev not found (set COVIDXRAY_CXR_DEV)")
    manifest = pd.read_csv(root / "manifest.csv", dtype=str, keep_default_na=False)
    out = S.make_splits(manifest, seed=0, root=root)  # computes phash from the 1,800 PNGs
    report = S.check_leakage(out, root=root)
    assert report.ok, report.details[:5]
    summary = S.split_summary(out)
    for label in CLASSES:
        assert summary.loc[["train", "val", "test"], label].tolist() == [420, 90, 90]
    assert summary.loc["total", "patients"] == 581
    stats = D.duplicate_stats(out)
    assert stats["exact_groups"] == 0 and stats["near_groups"] == 0
    # 256-bit phash: no distinct pair within 40 bits, far above the threshold of 16
    assert len(D.near_duplicate_pairs(out["phash"], 40)) == 0
    assert len(D.near_duplicate_pairs(out["phash"], 48)) == 1
    text = S.format_summary(summary, report, stats)
    assert "exact groups 0, near groups 0" in text
    with capsys.disabled():
        print("\n" + text)


# --- issue 11 -------------------------------------------------------------------------------------


def _pngs(folder, names, seed=0):
    from PIL import Image

    rng = np.random.default_rng(seed)
    for name in names:
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray((rng.random((64, 64)) * 255).astype(np.uint8)).save(folder / name)


def test_check_leakage_recomputes_stale_hash_columns(tmp_path):
    """Item 8: a splits CSV whose sha1/phash columns hide an exact copy across splits: found anyway."""
    import shutil

    names = [f"{c}/{k}.png" for c in CLASSES for k in range(3)]
    _pngs(tmp_path, names)
    shutil.copy(tmp_path / names[0], tmp_path / "COVID-19/copy.png")
    df = pd.DataFrame({"path": names + ["COVID-19/copy.png"], "label": [n.split("/")[0] for n in names] + ["COVID-19"],
                       "split": ["train", "val", "test"] * 3 + ["test"]})
    df["sha1"] = [f"{i:040x}" for i in range(len(df))]  # stale: all different
    df["phash"] = _random_hashes(len(df), np.random.default_rng(1))
    df.to_csv(tmp_path / "splits.csv", index=False)
    assert S.check_leakage(tmp_path / "splits.csv", recompute=False).ok  # trusting the columns misses it
    report = S.check_leakage(tmp_path / "splits.csv")  # a CSV the package did not write: recomputed
    assert report.n_exact_dups_shared == 1 and not report.ok


def test_make_splits_refuses_one_image_with_two_labels():
    """Item 7: an exact (or near) duplicate carrying two labels is an error naming the files."""
    df = _manifest(10)
    df.loc[8, ["sha1", "phash"]] = df.loc[13, ["sha1", "phash"]].to_numpy()  # rows 8 and 13: other classes
    assert df.at[8, "label"] != df.at[13, "label"]
    with pytest.raises(S.DataError, match=r"carry two labels .*img00008.png \(Normal\).*img00013.png \(Viral Pneumonia\)"):
        S.make_splits(df)
