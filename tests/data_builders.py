"""Tiny fake dataset trees in the exact layouts the benchmark sets are distributed in, with their quirks
(inverted masks, colour edge maps, 3-level maps, .npz masks, 0/1 masks, missing masks, size mismatches,
corrupt files). Each builder writes a tree under ``tmp`` and returns a :class:`Expect` with what indexing it
must produce: per image file name, the label and the expected mask in the project convention.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

W, H = 16, 12


@dataclass
class Expect:
    source: str
    root: Path
    samples: dict[str, tuple[int, np.ndarray | None]]  # image path suffix -> (label, expected mask or None)
    problems: set[tuple[str, str]] = field(default_factory=set)  # (kind, file name)
    options: dict[str, Any] = field(default_factory=dict)
    sources: set[str] = field(default_factory=set)  # expected record source names
    band: tuple[int, int] | None = None
    weights: dict[str, float] = field(default_factory=dict)
    lossy: bool = False  # masks are JPEG-coded: compare approximately


def photo(path: Path, w: int = W, h: int = H, seed: int = 0, fmt: str | None = None) -> Path:
    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path, format=fmt)
    return path


def box_mask(w: int = W, h: int = H, box: tuple[int, int, int, int] = (2, 2, 8, 6), value: int = 255) -> np.ndarray:
    """0 outside, ``value`` inside ``box`` = (x0, y0, x1, y1)."""
    m = np.zeros((h, w), np.uint8)
    x0, y0, x1, y1 = box
    m[y0:y1, x0:x1] = value
    return m


def save(path: Path, arr: np.ndarray, fmt: str | None = None, **params: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path, format=fmt, **params)
    return path


def corrupt(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\xff\xd8\xff\xe0 this is not really a JPEG")
    return path


# --------------------------------------------------------------------------------------------------------


def build_miml(tmp: Path) -> Expect:
    root = tmp / "MIML"
    soft = box_mask()
    soft[6:9, 8:12] = 100  # uncertain auto-annotation pixels: kept as they are, ignored via the band
    samples: dict[str, tuple[int, np.ndarray | None]] = {}
    for part in (1, 2):
        for n in (1, 2):
            photo(root / f"MIML_Part{part}" / "imgs" / f"{n}.jpg", seed=part * 10 + n)
            if part == 2 and n == 2:
                continue  # missing mask
            save(root / f"MIML_Part{part}" / "masks" / f"{n}.png", soft)
            samples[f"MIML_Part{part}/imgs/{n}.jpg"] = (1, soft)
    return Expect("miml", root, samples, {("missing_mask", "2.jpg")}, sources={"miml-part1", "miml-part2"}, band=(7, 193))


def build_mimlv2(tmp: Path) -> Expect:
    root = tmp / "MIMLv2"
    m = box_mask()
    samples = {}
    scores = {"a": 0.9, "b": 0.7, "c": 0.3}
    for i, stem in enumerate(scores):
        photo(root / "imgs" / f"{stem}.jpg", seed=i)
        save(root / "masks" / f"{stem}.png", m)
        if scores[stem] > 0.5:
            samples[f"{stem}.jpg"] = (1, m)
    with (root / "qes.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["image", "qes"])
        for stem, q in scores.items():
            writer.writerow([f"imgs/{stem}.jpg", q])
    return Expect("mimlv2", root, samples, options={"min_qes": "0.5", "qes_weight": "true"}, sources={"mimlv2"}, band=(7, 193),
                  weights={"a.jpg": 0.9, "b.jpg": 0.7})


def _build_casia1(tmp: Path, plus: bool) -> Expect:
    root = tmp / ("CASIA1plus" if plus else "CASIA1")
    m1, m2 = box_mask(), box_mask(box=(4, 4, 12, 10))
    photo(root / "Tp" / "CM" / "Sp_S_CND_A_pla0016_pla0016_0196.jpg", seed=1)
    save(root / "Gt" / "CM" / "Sp_S_CND_A_pla0016_pla0016_0196_gt.png", m1)
    photo(root / "Tp" / "Sp" / "Sp_D_CND_A_pla0005_pla0023_0281.jpg", seed=2)
    save(root / "Gt" / "Sp" / "Sp_D_CND_A_pla0005_pla0023_0281_gt.png", m2)
    corrupt(root / "Tp" / "Sp" / "Sp_D_CNN_A_art0024_ani0032_0268.jpg")  # corrupt file
    save(root / "Gt" / "Sp" / "Sp_D_CNN_A_art0024_ani0032_0268_gt.png", m2)
    au = ["corel_100.jpg", "corel_7.jpg"] if plus else ["Au_ani_0001.jpg"]
    for i, name in enumerate(au):
        photo(root / "Au" / name, seed=20 + i)
    (root / "Au" / "Thumbs.db").write_bytes(b"junk")
    photo(root / "Au" / "._Au_ani_0002.jpg", seed=3)  # macOS resource fork: must be ignored
    samples: dict[str, tuple[int, np.ndarray | None]] = {
        "Sp_S_CND_A_pla0016_pla0016_0196.jpg": (1, m1), "Sp_D_CND_A_pla0005_pla0023_0281.jpg": (1, m2),
        **{n: (0, None) for n in au},
    }
    name = "casia1plus" if plus else "casia1"
    return Expect(name, root, samples, {("unreadable_image", "Sp_D_CNN_A_art0024_ani0032_0268.jpg")}, sources={name})


def build_casia1(tmp: Path) -> Expect:
    return _build_casia1(tmp, plus=False)


def build_casia1plus(tmp: Path) -> Expect:
    return _build_casia1(tmp, plus=True)


def build_casia2(tmp: Path) -> Expect:
    root = tmp / "CASIA2"
    gt = root / "CASIA 2 Groundtruth"
    m = box_mask()
    photo(root / "Tp" / "Tp_D_CNN_M_B_nat00056_nat00099_11105.jpg", seed=1)
    save(gt / "Tp_D_CNN_M_B_nat00056_nat00099_11105_gt.png", m)
    photo(root / "Tp" / "Tp_S_NRN_S_N_arc00013_arc00013_01107.tif", seed=2)  # .tif tampered image
    save(gt / "Tp_S_NRN_S_N_arc00013_arc00013_01107_gt.png", m)
    photo(root / "Tp" / "Tp_D_NRN_S_N_ani10171_ani10167_12434.jpg", seed=3)  # no mask
    photo(root / "Tp" / "Tp_D_CRN_M_N_pla00057_pla00056_10900.jpg", seed=4)  # size mismatch: fixed by resizing
    big = box_mask(2 * W, 2 * H, (4, 4, 16, 12))
    save(gt / "Tp_D_CRN_M_N_pla00057_pla00056_10900_gt.png", big)
    photo(root / "Tp" / "Tp_D_CND_M_N_ani00018_sec00096_00138.jpg", seed=5)  # empty mask
    save(gt / "Tp_D_CND_M_N_ani00018_sec00096_00138_gt.png", np.zeros((H, W), np.uint8))
    save(gt / "Tp_D_XXX_orphan_gt.png", m)  # mask without image
    photo(root / "Au" / "Au_ani_00001.jpg", seed=6)
    photo(root / "Au" / "Au_ani_00002.bmp", seed=7, fmt="BMP")
    resized = box_mask(W, H, (2, 2, 8, 6))
    return Expect("casia2", root, {
        "Tp_D_CNN_M_B_nat00056_nat00099_11105.jpg": (1, m),
        "Tp_S_NRN_S_N_arc00013_arc00013_01107.tif": (1, m),
        "Tp_D_CRN_M_N_pla00057_pla00056_10900.jpg": (1, resized),
        "Au_ani_00001.jpg": (0, None), "Au_ani_00002.bmp": (0, None),
    }, {("missing_mask", "Tp_D_NRN_S_N_ani10171_ani10167_12434.jpg"),
        ("size_mismatch", "Tp_D_CRN_M_N_pla00057_pla00056_10900_gt.png"),
        ("empty_mask", "Tp_D_CND_M_N_ani00018_sec00096_00138_gt.png"),
        ("orphan_mask", "Tp_D_XXX_orphan_gt.png")}, sources={"casia2"})


def build_columbia(tmp: Path) -> Expect:
    root = tmp / "Columbia"
    w, h = 32, 32
    edge = np.zeros((h, w, 3), np.uint8)
    edge[..., 0] = 255  # red: the region of the first camera
    edge[:, 16:] = (0, 255, 0)  # green: the spliced region
    photo(root / "4cam_splc" / "canong3_canonxt_sub_01.tif", w, h, seed=1)
    save(root / "4cam_splc" / "edgemask" / "canong3_canonxt_sub_01_edgemask.jpg", edge, quality=95)
    photo(root / "4cam_splc" / "nikond70_kodakdcs330_sub_22.tif", w, h, seed=2)  # no edge map
    photo(root / "4cam_auth" / "canong3_02_sub_01.tif", w, h, seed=3)
    save(root / "4cam_auth" / "edgemask" / "canong3_02_sub_01_edgemask.jpg", edge)
    expected = np.zeros((h, w), np.uint8)
    expected[:, 16:] = 255
    return Expect("columbia", root, {"canong3_canonxt_sub_01.tif": (1, expected), "canong3_02_sub_01.tif": (0, None)},
                  {("missing_mask", "nikond70_kodakdcs330_sub_22.tif")}, sources={"columbia"}, lossy=True)


def build_coverage(tmp: Path) -> Expect:
    root = tmp / "COVERAGE"
    forged, paste = box_mask(box=(1, 1, 12, 8)), box_mask(box=(8, 4, 12, 8))
    for n in (1, 2):
        photo(root / "image" / f"{n}.tif", seed=n)
        photo(root / "image" / f"{n}t.tif", seed=10 + n)
        save(root / "mask" / f"{n}forged.tif", forged)
        save(root / "mask" / f"{n}paste.tif", paste)
        save(root / "mask" / f"{n}copy.tif", box_mask(box=(1, 1, 5, 5)))
    (root / "label").mkdir()
    return Expect("coverage", root, {"1t.tif": (1, forged), "2t.tif": (1, forged), "1.tif": (0, None), "2.tif": (0, None)},
                  sources={"coverage"})


def build_nist16(tmp: Path) -> Expect:
    root = tmp / "NC2016_Test0613"
    m = box_mask()
    photo(root / "probe" / "NC2016_0048.jpg", seed=1)
    save(root / "reference" / "manipulation" / "mask" / "NC2016_0048.png", 255 - m)  # inverted on disk
    photo(root / "probe" / "NC2016_1117.jpg", seed=2)
    photo(root / "probe" / "NC2016_9999.jpg", seed=3)
    save(root / "reference" / "manipulation" / "mask" / "NC2016_9999.png", np.zeros((H, W), np.uint8))  # all black
    ref = root / "reference" / "manipulation" / "NC2016-manipulation-ref.csv"
    rows = [
        ["TaskID", "ProbeFileID", "ProbeFileName", "ProbeMaskFileName", "DonorFileID", "DonorFileName", "IsTarget"],
        ["manipulation", "a", "probe/NC2016_0048.jpg", "reference/manipulation/mask/NC2016_0048.png", "", "", "Y"],
        ["manipulation", "b", "probe/NC2016_1117.jpg", "", "", "", "N"],
        ["manipulation", "c", "probe/NC2016_9999.jpg", "reference/manipulation/mask/NC2016_9999.png", "", "", "Y"],
        ["manipulation", "a", "probe/NC2016_0048.jpg", "reference/manipulation/mask/NC2016_0048.png", "", "", "Y"],
    ]
    ref.write_text("\n".join("|".join(r) for r in rows) + "\n")
    # The all-black mask inverts to all-manipulated: reported, and kept under `fix`.
    return Expect("nist16", root, {"NC2016_0048.jpg": (1, m), "NC2016_1117.jpg": (0, None),
                                   "NC2016_9999.jpg": (1, np.full((H, W), 255, np.uint8))},
                  {("full_mask", "NC2016_9999.png")}, sources={"nist16"})


def build_imd2020(tmp: Path) -> Expect:
    root = tmp / "IMD2020"
    m = box_mask()
    photo(root / "1a1ogs" / "1a1ogs_orig.jpg", seed=1)
    photo(root / "1a1ogs" / "c8tf5mq_0.png", seed=2)
    save(root / "1a1ogs" / "c8tf5mq_0_mask.png", m)
    photo(root / "1a1ogs" / "c8tfxxx_0.jpg", seed=3)  # no mask
    photo(root / "z28" / "00065_orig.jpg", seed=4)
    photo(root / "z28" / "00065_fake.jpg", seed=5)
    save(root / "z28" / "00065_fake_mask.png", np.stack([m, m, m], -1))  # an RGB mask
    return Expect("imd2020", root, {"1a1ogs_orig.jpg": (0, None), "c8tf5mq_0.png": (1, m), "00065_orig.jpg": (0, None),
                                    "00065_fake.jpg": (1, m)}, {("missing_mask", "c8tfxxx_0.jpg")}, sources={"imd2020"})


def build_dso1(tmp: Path) -> Expect:
    root = tmp / "tifs-database"
    m = box_mask()
    inverted = np.stack([255 - m] * 3, -1)  # white background, black spliced region, RGB
    for n in ("01", "02"):
        photo(root / "DSO-1" / f"splicing-{n}.png", seed=int(n))
        save(root / "DSO-1-Fake-Images-Masks" / f"splicing-{n}.png", inverted)
        photo(root / "DSO-1" / f"normal-{n}.png", seed=10 + int(n))
    photo(root / "DSI-1" / "x.png", seed=5)  # another set of the database: not indexed
    return Expect("dso1", root, {"splicing-01.png": (1, m), "splicing-02.png": (1, m), "normal-01.png": (0, None),
                                 "normal-02.png": (0, None)}, sources={"dso1"})


def _korus_map() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    gt = np.zeros((H, W), np.uint8)
    gt[2:6, 2:8] = 255  # semantic change
    gt[6:8, 2:8] = 127  # collateral damage
    white = (gt == 255).astype(np.uint8) * 255
    grey = (gt == 127)
    return gt, white, grey


def build_korus(tmp: Path, collateral: str = "manipulated") -> Expect:
    root = tmp / "realistic-tampering-dataset"
    gt, white, grey = _korus_map()
    for cam in ("Canon_60D", "Sony_A57"):
        photo(root / cam / "tampered-realistic" / f"r0{cam[0]}.TIF", seed=1, fmt="TIFF")
        save(root / cam / "ground-truth" / f"r0{cam[0]}.PNG", gt, fmt="PNG")
        photo(root / cam / "pristine" / f"r0{cam[0]}.TIF", seed=2, fmt="TIFF")
    expected = white.copy()
    expected[grey] = {"manipulated": 255, "ignore": 128, "authentic": 0}[collateral]
    samples: dict[str, tuple[int, np.ndarray | None]] = {}
    for cam in ("Canon_60D", "Sony_A57"):
        samples[f"tampered-realistic/r0{cam[0]}.TIF"] = (1, expected)
        samples[f"pristine/r0{cam[0]}.TIF"] = (0, None)
    return Expect("korus", root, samples, options={"collateral": collateral}, sources={"korus"},
                  band=(127, 129) if collateral == "ignore" else None)


def build_korus_ignore(tmp: Path) -> Expect:
    return build_korus(tmp, "ignore")


def build_in_the_wild(tmp: Path) -> Expect:
    root = tmp / "label_in_wild"
    m = box_mask()
    photo(root / "images" / "wild1.jpg", seed=1)
    save(root / "masks" / "wild1.png", (m > 0).astype(np.uint8))  # a 0/1 mask: scaled to 0/255
    photo(root / "images" / "wild2.jpg", seed=2)
    save(root / "masks" / "wild2.png", m)
    return Expect("in-the-wild", root, {"wild1.jpg": (1, m), "wild2.jpg": (1, m)}, sources={"in-the-wild"})


def build_cocoglide(tmp: Path) -> Expect:
    root = tmp / "CocoGlide"
    m = box_mask()
    photo(root / "fake" / "glide_inpainting_val2017_139.png", seed=1)
    save(root / "mask" / "glide_inpainting_val2017_139_mask.png", m)
    photo(root / "real" / "val2017_139.png", seed=2)
    return Expect("cocoglide", root, {"glide_inpainting_val2017_139.png": (1, m), "val2017_139.png": (0, None)},
                  sources={"cocoglide"})


def build_tampcoco(tmp: Path) -> Expect:
    root = tmp / "tampCOCO"
    m = box_mask()
    photo(root / "sp_images" / "100_000000097936.jpg_000000097936.jpg.jpg", seed=1)
    save(root / "sp_masks" / "100_000000097936.png_000000097936.png.png", m)
    photo(root / "bcm_images" / "85_000000415798.jpg_000000415798.jpg_RT-31.5_RS0.76.jpg", seed=2)
    save(root / "bcm_masks" / "85_000000415798.png_000000415798.png_RT-31.5_RS0.76.png", (m > 0).astype(np.uint8))
    photo(root / "bcm_images" / "85_000000415798.jpg_000000415798.jpg_RT-31.5.jpg", seed=3)
    save(root / "bcm_masks" / "85_000000415798.png_000000415798.png_RT-31.5.png", m)
    return Expect("tampcoco", root, {
        "100_000000097936.jpg_000000097936.jpg.jpg": (1, m),
        "85_000000415798.jpg_000000415798.jpg_RT-31.5_RS0.76.jpg": (1, m),
        "85_000000415798.jpg_000000415798.jpg_RT-31.5.jpg": (1, m),
    }, sources={"tampcoco-sp", "tampcoco-bcm"})


def build_compraise(tmp: Path) -> Expect:
    root = tmp / "compRAISE"
    photo(root / "ra4250597t_Q100.jpg", seed=1)
    photo(root / "part2" / "rf8b16591t_Q79_resize_0.96_Q84.jpg", seed=2)
    return Expect("compraise", root, {"ra4250597t_Q100.jpg": (0, None), "rf8b16591t_Q79_resize_0.96_Q84.jpg": (0, None)},
                  sources={"compraise"})


def build_fantasticreality(tmp: Path) -> Expect:
    root = tmp / "FantasticReality_v1"
    m = box_mask()
    labels = (m > 0).astype(np.int32) * 7  # an instance label map
    photo(root / "dataset" / "ColorFakeImages" / "img_1.jpg", seed=1)
    (root / "dataset" / "SegmentationFake").mkdir(parents=True)
    np.savez_compressed(root / "dataset" / "SegmentationFake" / "img_1.npz", labels[None])
    photo(root / "dataset" / "ColorFakeImages" / "img_2.jpg", seed=2)
    (root / "dataset" / "SegmentationFake" / "img_2.npz").write_bytes(b"not a zip")  # corrupt mask
    photo(root / "dataset" / "ColorRealImages" / "real_1.jpg", seed=3)
    return Expect("fantasticreality", root, {"img_1.jpg": (1, m), "real_1.jpg": (0, None)},
                  {("unreadable_mask", "img_2.npz")}, sources={"fantasticreality"})


def build_defacto(tmp: Path) -> Expect:
    root = tmp / "DEFACTO"
    m = box_mask()
    photo(root / "splicing_1_img" / "img" / "0_000000000071.tif", seed=1)
    save(root / "splicing_1_annotations" / "probe_mask" / "0_000000000071.tif", m)
    (root / "splicing_1_annotations" / "donor_mask").mkdir(parents=True)
    photo(root / "copymove_img" / "img" / "0_000000000260.tif", seed=2)
    save(root / "copymove_annotations" / "probe_mask" / "0_000000000260.tif", np.full((H, W), 255, np.uint8))  # full
    return Expect("defacto", root, {"0_000000000071.tif": (1, m), "0_000000000260.tif": (1, np.full((H, W), 255, np.uint8))},
                  {("full_mask", "0_000000000260.tif")}, sources={"defacto-splicing", "defacto-copymove"})


def build_folder(tmp: Path) -> Expect:
    root = tmp / "MySet"
    ma, mb = box_mask(), box_mask(box=(6, 2, 14, 10))
    # Sort order of masks differs from that of images; one image has no mask, one mask no image.
    photo(root / "Tp" / "b_photo.jpg", seed=1)
    save(root / "Gt" / "b_photo_gt.png", mb)
    photo(root / "Tp" / "a_photo.png", seed=2)
    save(root / "Gt" / "A_PHOTO_mask.png", ma)
    photo(root / "Tp" / "c_photo.jpg", seed=3)
    save(root / "Gt" / "aa_other_gt.png", ma)
    photo(root / "Au" / "z.jpg", seed=4)
    return Expect("folder", root, {"b_photo.jpg": (1, mb), "a_photo.png": (1, ma), "z.jpg": (0, None)},
                  {("missing_mask", "c_photo.jpg"), ("orphan_mask", "aa_other_gt.png")}, sources={"myset"})


def build_folder_inverted(tmp: Path) -> Expect:
    root = tmp / "inv"
    m = box_mask()
    photo(root / "tampered" / "x.png", seed=1)
    save(root / "mask" / "x.png", 255 - m)
    photo(root / "original" / "x.png", seed=2)
    return Expect("folder", root, {"tampered/x.png": (1, m), "original/x.png": (0, None)}, options={"invert": "true"},
                  sources={"inv"})


def build_benco(tmp: Path) -> Expect:
    root = tmp / "benco"
    m = box_mask()
    photo(root / "Tp" / "t1.jpg", seed=1)
    save(root / "Gt" / "t1.png", m)
    photo(root / "Au" / "a1.jpg", seed=2)
    absolute = photo(tmp / "elsewhere" / "t2.jpg", seed=3)
    save(tmp / "elsewhere" / "t2_gt.png", m)
    listing = [["Tp/t1.jpg", "Gt/t1.png"], ["Au/a1.jpg", "Negative"], [str(absolute), str(tmp / "elsewhere" / "t2_gt.png")],
               ["only-one-entry"]]
    path = root / "casia_test.json"
    path.write_text(json.dumps(listing))
    return Expect("benco", path, {"t1.jpg": (1, m), "a1.jpg": (0, None), "t2.jpg": (1, m)},
                  {("bad_entry", "casia_test.json[3]")}, sources={"casia_test"})


BUILDERS: dict[str, Callable[[Path], Expect]] = {
    "miml": build_miml,
    "mimlv2": build_mimlv2,
    "casia1": build_casia1,
    "casia1plus": build_casia1plus,
    "casia2": build_casia2,
    "columbia": build_columbia,
    "coverage": build_coverage,
    "nist16": build_nist16,
    "imd2020": build_imd2020,
    "dso1": build_dso1,
    "korus": build_korus,
    "korus-ignore": build_korus_ignore,
    "in-the-wild": build_in_the_wild,
    "cocoglide": build_cocoglide,
    "tampcoco": build_tampcoco,
    "compraise": build_compraise,
    "fantasticreality": build_fantasticreality,
    "defacto": build_defacto,
    "folder": build_folder,
    "folder-inverted": build_folder_inverted,
    "benco": build_benco,
}
