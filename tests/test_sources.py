"""Dataset sources: every layout as distributed (tiny fake trees with the real quirks) indexed into a manifest
whose masks decode, in the project convention, to the expected arrays; policies, check modes, parallel
checking, pairing by stem, and the real shared sets."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from data_builders import BUILDERS, Expect, box_mask, build_casia1, build_casia2, build_nist16, photo, save
from webiml.data.manifest import read_manifest
from webiml.data.masks import BINARY, target_from_mask
from webiml.data.sources import SOURCES, IndexingFailed, get_source, index_source
from webiml.data.sources.base import Candidate, decode_mask, pair_by_key, stem_key
from webiml.data.sources.indexing import CheckOptions, run_checks
from webiml.io import read_mask


def _match(records, key: str):
    found = [r for r in records if r.image.replace(os.sep, "/").endswith("/" + key)]
    assert len(found) == 1, f"{key}: {len(found)} records match"
    return found[0]


def _check(exp: Expect, out: Path, result) -> None:
    records = read_manifest(out)
    assert len(records) == len(exp.samples), [r.image for r in records]
    cache = out.parent / f"{out.stem}_masks"
    for key, (label, mask) in exp.samples.items():
        r = _match(records, key)
        assert r.label == label, key
        if mask is None:
            assert r.mask is None, key
            continue
        assert tuple(r.band) == (exp.band or tuple(BINARY)), key
        got = np.array(read_mask(r.mask))
        assert got.shape == mask.shape, key
        if exp.lossy:
            agree = (target_from_mask(got, r.band) == target_from_mask(mask, r.band)).float().mean().item()
            assert agree > 0.97, (key, agree)
        else:
            np.testing.assert_array_equal(got, mask, err_msg=key)
        if "mask_source" in r.extra:  # converted masks live in the cache next to the manifest
            assert Path(r.mask).is_relative_to(cache), r.mask
            assert Path(r.extra["mask_source"]).exists()
        assert r.extra["width"] == mask.shape[1] and r.extra["height"] == mask.shape[0]
        assert 0.0 <= r.extra["area"] <= 1.0
    assert {r.source for r in records} == exp.sources
    for name, weight in exp.weights.items():
        assert _match(records, name).weight == pytest.approx(weight)
    found = {(p.kind, Path(p.path).name) for p in result.problems}
    assert found == exp.problems
    # Paths under the manifest's folder are stored relative to it.
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    for row in rows:
        if row["mask"] and Path(out.parent / row["mask"]).is_relative_to(cache):
            assert not os.path.isabs(row["mask"])


@pytest.mark.parametrize("case", sorted(BUILDERS))
def test_source_layout(case: str, tmp_path: Path) -> None:
    exp = BUILDERS[case](tmp_path / "data")
    out = tmp_path / "manifests" / f"{case}.jsonl"
    result = index_source(exp.source, exp.root, out, options=exp.options, workers=0)
    _check(exp, out, result)
    assert result.manifest == out.resolve()
    assert exp.source in SOURCES or exp.source == "folder"


def test_every_source_has_a_builder_and_a_documented_layout() -> None:
    built = {BUILDERS[k].__name__ for k in BUILDERS}
    for name, source in SOURCES.items():
        assert f"build_{name.replace('-', '_')}" in built, f"no test tree for source {name}"
        assert "ROOT" in source.layout or "Layout" in source.layout, name
        assert source.title


def test_policy_skip_drops_fixable_problems(tmp_path: Path) -> None:
    exp = build_casia2(tmp_path / "d")
    out = tmp_path / "m.jsonl"
    result = index_source("casia2", exp.root, out, policy="skip")
    names = {Path(r.image).name for r in read_manifest(out)}
    assert "Tp_D_CRN_M_N_pla00057_pla00056_10900.jpg" not in names  # size mismatch: skipped, not resized
    assert {p.action for p in result.problems if p.kind != "orphan_mask"} == {"skipped"}
    nist = build_nist16(tmp_path / "n")
    index_source("nist16", nist.root, tmp_path / "n.jsonl", policy="skip")
    assert "NC2016_9999.jpg" not in {Path(r.image).name for r in read_manifest(tmp_path / "n.jsonl")}


def test_policy_fail_raises_and_writes_nothing(tmp_path: Path) -> None:
    exp = build_casia2(tmp_path / "d")
    out = tmp_path / "m.jsonl"
    with pytest.raises(IndexingFailed) as info:
        index_source("casia2", exp.root, out, policy="fail")
    kinds = {p.kind for p in info.value.problems}
    assert {"missing_mask", "size_mismatch", "empty_mask"} <= kinds
    assert "Tp_D_NRN_S_N_ani10171_ani10167_12434.jpg" in str(info.value)
    assert not out.exists()


def test_problems_file_and_sha256(tmp_path: Path) -> None:
    exp = build_casia2(tmp_path / "d")
    out = tmp_path / "m.jsonl"
    result = index_source("casia2", exp.root, out, sha256=True)
    problems = [json.loads(line) for line in (tmp_path / "m.problems.jsonl").read_text().splitlines()]
    assert len(problems) == len(result.problems)
    for r in read_manifest(out):
        assert len(r.extra["sha256"]) == 64
        if r.mask:
            assert len(r.extra["mask_sha256"]) == 64
    text = result.summary()
    assert "missing_mask" in text and "Tp_D_NRN_S_N_ani10171_ani10167_12434.jpg" in text and "files/s" in text


def test_check_modes(tmp_path: Path) -> None:
    exp = build_casia1(tmp_path / "d")
    header = index_source("casia1", exp.root, tmp_path / "h.jsonl", check="header")
    assert {p.kind for p in header.problems} == {"unreadable_image"}
    none = index_source("casia1", exp.root, tmp_path / "n.jsonl", check="none")
    records = read_manifest(tmp_path / "n.jsonl")
    # "none" only checks existence: the corrupt JPEG passes, sizes and areas are not recorded.
    assert not none.problems and len(records) == len(exp.samples) + 1
    assert all("width" not in r.extra for r in records)


def test_parallel_checks_equal_serial(tmp_path: Path) -> None:
    exp = build_casia2(tmp_path / "d")
    source = get_source("casia2")
    candidates = list(source.scan(exp.root.resolve(), lambda *a: None)) * 5
    opts = CheckOptions(cache_dir=str(tmp_path / "cache"), root=str(exp.root.resolve()))
    serial = run_checks(candidates, opts, workers=0)
    parallel = run_checks(candidates, opts, workers=2, min_parallel=0)
    assert [r for r, _ in serial] == [r for r, _ in parallel]
    assert [p for _, p in serial] == [p for _, p in parallel]


def test_pairing_is_by_stem_not_sort_order(tmp_path: Path) -> None:
    images = [Path("Tp/b.jpg"), Path("Tp/a.png"), Path("Tp/c.jpg")]
    masks = [Path("Gt/a_gt.png"), Path("Gt/B-MASK.png"), Path("Gt/zz_mask.png")]
    seen = []
    pairs = pair_by_key(images, masks, lambda *a: seen.append(a))
    assert pairs == {Path("Tp/b.jpg"): Path("Gt/B-MASK.png"), Path("Tp/a.png"): Path("Gt/a_gt.png"), Path("Tp/c.jpg"): None}
    assert [a[0] for a in seen] == ["orphan_mask"]
    assert stem_key("x_gt_mask.PNG") == "x"


def test_decoders(tmp_path: Path) -> None:
    m = box_mask()
    np.savez(tmp_path / "hwc.npz", mask=np.stack([m, m * 0], -1))
    got, converted = decode_mask(Candidate("i", str(tmp_path / "hwc.npz"), 1, decoder="npz"))
    assert converted and np.array_equal(got, m)
    save(tmp_path / "three.png", np.array([[0, 5, 60, 127, 210, 255]], np.uint8))
    for collateral, expected in (("manipulated", [0, 0, 255, 255, 255, 255]), ("authentic", [0, 0, 0, 0, 255, 255]),
                                 ("ignore", [0, 0, 128, 128, 255, 255])):
        got, _ = decode_mask(Candidate("i", str(tmp_path / "three.png"), 1, decoder="levels3",
                                       decoder_args=(("collateral", collateral),)))
        assert got.tolist() == [expected], collateral
    with pytest.raises(ValueError, match="unknown mask decoder"):
        decode_mask(Candidate("i", str(tmp_path / "three.png"), 1, decoder="nope"))


def test_errors_are_clear(tmp_path: Path) -> None:
    with pytest.raises(KeyError, match="unknown source"):
        get_source("nope")
    with pytest.raises(ValueError, match="unknown option"):
        get_source("casia2", colour="red")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no tampered"):
        index_source("casia2", tmp_path / "empty", tmp_path / "m.jsonl")
    photo(tmp_path / "ok" / "Tp" / "x.jpg")
    (tmp_path / "ok" / "Gt").mkdir()
    with pytest.raises(ValueError, match="policy"):
        index_source("folder", tmp_path / "ok", tmp_path / "m.jsonl", policy="maybe")
    assert get_source("CASIAv2").name == "casia2" and get_source("tampcoco", subsets="sp").opts == {"subsets": "sp"}


def test_only_and_name(tmp_path: Path) -> None:
    exp = build_casia2(tmp_path / "d")
    index_source("casia2", exp.root, tmp_path / "au.jsonl", only="authentic", name="casia2-au")
    records = read_manifest(tmp_path / "au.jsonl")
    assert records and {r.label for r in records} == {0} and {r.source for r in records} == {"casia2-au"}


@pytest.mark.parametrize("name, n_manip, n_auth", [("casia1-samples", 36, 36), ("noso", 18, 13)])
def test_real_shared_sets(shared_data: Path, tmp_path: Path, name: str, n_manip: int, n_auth: int) -> None:
    out = tmp_path / f"{name}.jsonl"
    result = index_source("folder", shared_data / "real" / name, out, workers=2, check="header")
    records = read_manifest(out)
    assert sum(r.label for r in records) == n_manip and sum(1 - r.label for r in records) == n_auth
    assert {r.source for r in records} == {name} and not result.problems
    for r in records:
        if r.mask:  # every mask pairs with the tampered image of the same stem
            assert Path(r.mask).stem == Path(r.image).stem and 0 < r.extra["area"] < 1
