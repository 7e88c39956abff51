"""`webiml annotate` and the naive baseline annotator on tiny generated pair folders: outputs, the
manifest, QES keep/drop, unreadable pairs, CSV/JSONL sources, and resume after a hard kill."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from scipy import ndimage

from webiml.annotate.baseline import DifferenceAnnotator
from webiml.annotate.output import load_done
from webiml.annotate.pair_sources import PairSpec, discover_pairs
from webiml.annotate.pipeline import annotate_pairs
from webiml.annotate.qes import qes
from webiml.cli import main
from webiml.data.manifest import read_manifest
from webiml.io import read_mask

REPO = Path(__file__).resolve().parents[1]
SIZE = 48


def _photo(rng: np.random.Generator, h: int = SIZE, w: int = SIZE) -> np.ndarray:
    """A smooth random colour texture (stands in for a photo)."""
    noise = rng.random((h, w, 3)) * 255
    img = np.stack([ndimage.gaussian_filter(noise[..., c], 3) for c in range(3)], axis=2)
    img = (img - img.min()) / max(np.ptp(img), 1e-6) * 200 + 20
    return img.round().astype(np.uint8)


def _pair(i: int) -> tuple[np.ndarray, np.ndarray]:
    """Pair ``i``: kinds cycle through a strong pasted patch (confident -> kept), a faint patch whose
    difference sits at the threshold (uncertain -> dropped) and an unedited copy (empty -> dropped)."""
    rng = np.random.default_rng(i)
    orig = _photo(rng)
    forged = orig.copy()
    y, x = rng.integers(4, SIZE - 20, size=2)
    kind = i % 3
    if kind == 0:
        forged[y:y + 16, x:x + 16] = _photo(rng, 16, 16) // 4 + 180
    elif kind == 1:
        forged[y:y + 16, x:x + 16] = np.clip(orig[y:y + 16, x:x + 16].astype(int) + 24, 0, 255).astype(np.uint8)
    return orig, forged


def _save(path: Path, image: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(path)


def make_pair_folders(root: Path, n: int) -> Path:
    """``root/pNN/`` pair folders, alternating the MIML ``0.png``/``1.png`` and ``original``/``forged`` names."""
    for i in range(n):
        orig, forged = _pair(i)
        if i % 2:
            _save(root / f"p{i:02d}" / "0.png", orig)
            _save(root / f"p{i:02d}" / "1.png", forged)
        else:
            _save(root / f"p{i:02d}" / "original.png", orig)
            _save(root / f"p{i:02d}" / "forged.png", forged)
    return root


def _run(pairs: Path, out: Path, *extra: str) -> int:
    return main(["annotate", str(pairs), "-o", str(out), "--annotator", "baseline", "--no-progress", "--workers", "0", *extra])


# --------------------------------------------------------------------------------------------------
# baseline annotator


def test_baseline_finds_a_pasted_patch_and_handles_other_sizes() -> None:
    orig, forged = _pair(0)
    truth = np.abs(forged.astype(int) - orig.astype(int)).max(2) > 0
    ann = DifferenceAnnotator()
    res = ann.annotate(torch.from_numpy(orig).permute(2, 0, 1), torch.from_numpy(forged).permute(2, 0, 1))
    assert res.soft_mask.shape == (SIZE, SIZE) and res.soft_mask.dtype == torch.float32
    pred = res.soft_mask.numpy() > 0.5
    iou = (pred & truth).sum() / (pred | truth).sum()
    assert iou > 0.7 and res.category == "SPG" and res.align_method == "same_size"
    assert qes(res.soft_mask) > 0.5
    # identical images: an empty mask
    assert float(ann.annotate(orig, orig).soft_mask.max()) < 1 / 16
    # an original at twice the size (no feature matching here): resized onto the forgery's grid
    big = np.asarray(Image.fromarray(orig).resize((2 * SIZE, 2 * SIZE), Image.BICUBIC))
    res2 = DifferenceAnnotator(use_align=False).annotate(big, forged)
    assert res2.soft_mask.shape == (SIZE, SIZE)
    pred2 = res2.soft_mask.numpy() > 0.5
    assert (pred2 & truth).sum() / (pred2 | truth).sum() > 0.5


# --------------------------------------------------------------------------------------------------
# pair sources


def test_discover_pairs_from_folders_csv_and_jsonl(tmp_path: Path) -> None:
    root = make_pair_folders(tmp_path / "pairs", 3)
    _save(tmp_path / "pairs" / "nested" / "deeper" / "original.jpg", _pair(5)[0])
    _save(tmp_path / "pairs" / "nested" / "deeper" / "forged.png", _pair(5)[1])
    _save(tmp_path / "pairs" / "lonely" / "0.png", _pair(6)[0])  # a pair folder without its forgery
    specs = discover_pairs(root)
    assert [s.pair_id for s in specs] == ["lonely", "nested__deeper", "p00", "p01", "p02"]
    p01 = next(s for s in specs if s.pair_id == "p01")
    assert p01.original.endswith("p01/0.png") and p01.forged.endswith("p01/1.png") and os.path.isabs(p01.original)
    assert "missing forged" in specs[0].forged

    csv_path = tmp_path / "pairs.csv"
    csv_path.write_text("id,original,forged\nA/1,pairs/p00/original.png,pairs/p00/forged.png\n"
                        ",pairs/p01/0.png,pairs/p01/1.png\nA/1,pairs/p02/original.png,pairs/p02/forged.png\n")
    ids = [s.pair_id for s in discover_pairs(csv_path)]
    assert ids == ["A_1", "1", "A_1-1"]  # safe, unique; the forgery's stem when no id
    assert discover_pairs(csv_path)[0].original == str(tmp_path / "pairs" / "p00" / "original.png")
    jl = tmp_path / "pairs.jsonl"
    jl.write_text(json.dumps({"original": "pairs/p00/original.png", "forged": "pairs/p00/forged.png", "id": "x"}) + "\n")
    assert discover_pairs(jl) == [PairSpec("x", str(tmp_path / "pairs/p00/original.png"), str(tmp_path / "pairs/p00/forged.png"))]
    bad = tmp_path / "bad.csv"
    bad.write_text("a,b\n1,2\n")
    assert _run(bad, tmp_path / "o") == 2


# --------------------------------------------------------------------------------------------------
# the command


def test_annotate_folder_writes_masks_manifest_and_report(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pairs = make_pair_folders(tmp_path / "pairs", 6)
    out = tmp_path / "out"
    assert main(["annotate", str(pairs), "-o", str(out), "--annotator", "baseline", "--no-progress", "--workers", "1",
                 "--qes-weight"]) == 0
    text = capsys.readouterr().out
    assert "annotated 6/6 pairs" in text and "pairs/s" in text and "kept 2, dropped 4" in text

    rows = [json.loads(line) for line in (out / "annotations.jsonl").read_text().splitlines()]
    assert [r["pair_id"] for r in rows] == [f"p{i:02d}" for i in range(6)]
    for r in rows:
        mask = read_mask(out / r["mask"])
        assert mask.shape == (SIZE, SIZE)
        assert r["qes"] == pytest.approx(qes(mask), abs=1e-12)  # the QES of the mask as written
        assert r["kept"] == (r["qes"] > 0.5)
        assert r["kept"] == (int(r["pair_id"][1:]) % 3 == 0)  # strong patches kept, faint/none dropped
        assert r["category"] == "SPG" and r["status"] == "ok"
    records = read_manifest(out / "manifest.jsonl")
    assert [r.extra["pair_id"] for r in records] == ["p00", "p03"]
    for rec in records:
        assert rec.label == 1 and rec.source == "annotated" and tuple(rec.ignore_band) == (7, 193)
        assert Path(rec.image).is_file() and rec.image.endswith(("forged.png", "1.png"))
        assert Path(rec.mask).is_file() and rec.weight == pytest.approx(rec.extra["qes"]) and rec.extra["category"] == "SPG"
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["kept"], summary["dropped"], summary["failed"], summary["categories"]) == (2, 4, 0, {"SPG": 6})
    html = (out / "index.html").read_text()
    assert html.count("<tr>") == 6 and "QES" in html
    for r in rows:
        for kind in ("original", "forged", "mask"):
            assert (out / "thumbs" / f"{r['pair_id']}.{kind}.jpg").is_file()
    assert (out / "shards" / "shard-0.jsonl").is_file()

    # a second run with another keep threshold re-merges without annotating anything
    assert _run(pairs, out, "--qes-threshold", "0.0") == 0
    assert "(0 this run, 6 resumed)" in capsys.readouterr().out
    assert len(read_manifest(out / "manifest.jsonl")) == sum(r["qes"] > 0 for r in rows)
    # other annotator settings into the same folder are refused
    assert _run(pairs, out, "--option", "threshold=40") == 2


def test_unreadable_pair_is_reported_and_skipped(tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog) -> None:
    pairs = make_pair_folders(tmp_path / "pairs", 3)
    (pairs / "p01" / "1.png").write_bytes(b"this is not a PNG")
    (pairs / "p02" / "forged.png").unlink()  # only the original left
    out = tmp_path / "out"
    with caplog.at_level(logging.WARNING, logger="webiml.annotate"):
        assert _run(pairs, out) == 0
    text = capsys.readouterr().out
    assert "failed 2" in text and "p01" in text and "1.png" in text and "missing forged" in text
    assert any("skipped pair p01" in r.getMessage() for r in caplog.records)
    rows = {r["pair_id"]: r for r in map(json.loads, (out / "annotations.jsonl").read_text().splitlines())}
    assert rows["p00"]["status"] == "ok" and rows["p01"]["status"] == "failed" and rows["p02"]["status"] == "failed"
    assert "cannot decode" in rows["p01"]["error"]
    assert [r.extra["pair_id"] for r in read_manifest(out / "manifest.jsonl")] == ["p00"]
    assert "failed" in (out / "index.html").read_text()


class _StubAnnotator(torch.nn.Module):
    """Any object with ``annotate`` works: here a fixed square, and a failure for one size."""

    def annotate(self, original, forged, category=None, aligned=None):
        from webiml.annotate.caaa import AnnotationResult

        if forged.shape[-1] == 40:
            raise RuntimeError("boom")
        m = torch.zeros(forged.shape[-2:])
        m[:8, :8] = 1.0
        return AnnotationResult(m, "SDG", 0.9, False)


def test_any_annotator_module_and_annotation_errors(tmp_path: Path) -> None:
    make_pair_folders(tmp_path / "pairs", 2)
    _save(tmp_path / "pairs" / "p01" / "1.png", np.zeros((40, 40, 3), np.uint8))
    summary = annotate_pairs(tmp_path / "pairs", tmp_path / "out", annotator=_StubAnnotator(), num_workers=0,
                             progress=False, report_limit=0)
    assert summary is not None and (summary.kept, summary.failed) == (1, 1)
    assert summary.kept_categories == {"SDG": 1}
    assert "annotation failed: RuntimeError: boom" in summary.failures[0]["error"]
    assert not (tmp_path / "out" / "index.html").exists()


# --------------------------------------------------------------------------------------------------
# resume


def _complete_records(shard: Path) -> int:
    try:
        return shard.read_bytes().count(b"\n")
    except FileNotFoundError:
        return 0


def test_resume_after_sigkill_is_identical_and_redoes_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    n = 40
    pairs = make_pair_folders(tmp_path / "pairs", n)
    ref, out = tmp_path / "ref", tmp_path / "out"
    assert _run(pairs, ref) == 0  # uninterrupted reference
    capsys.readouterr()

    # the same command in a subprocess, killed with SIGKILL as soon as its shard shows the first pairs written
    cmd = [sys.executable, "-m", "webiml", "annotate", str(pairs), "-o", str(out), "--annotator", "baseline",
           "--no-progress", "--workers", "0"]
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    shard = out / "shards" / "shard-0.jsonl"
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 300
        while _complete_records(shard) < 1 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.002)
        assert proc.poll() is None, "the run ended before it could be killed"
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    assert not (out / "manifest.jsonl").exists()
    done, _ = load_done(out)
    k = len(done)
    assert 1 <= k < n, k
    first = {pid: (out / rec["mask"]).stat() for pid, rec in done.items()}
    # what a kill in the middle of the next pair can leave behind: a torn record and a temp file
    with (out / "shards" / "shard-0.jsonl").open("ab") as fh:
        fh.write(b'{"pair_id": "p39", "status": "o')
    (out / "masks" / ".p39.png.123.tmp").write_bytes(b"\x89PNG partial")

    assert _run(pairs, out) == 0
    text = capsys.readouterr().out
    assert f"({n - k} this run, {k} resumed)" in text
    for pid, st in first.items():  # the pairs written before the kill were not recomputed
        again = (out / "masks" / f"{pid}.png").stat()
        assert (again.st_ino, again.st_mtime_ns) == (st.st_ino, st.st_mtime_ns)
    for name in sorted(os.listdir(ref / "masks")):
        assert (out / "masks" / name).read_bytes() == (ref / "masks" / name).read_bytes(), name
    assert (out / "annotations.jsonl").read_text() == (ref / "annotations.jsonl").read_text()
    assert (out / "manifest.jsonl").read_text() == (ref / "manifest.jsonl").read_text()
    assert len((out / "annotations.jsonl").read_text().splitlines()) == n
    lines = (out / "shards" / "shard-0.jsonl").read_bytes().splitlines()
    assert len(lines) == n and all(json.loads(line) for line in lines)  # the torn line was cut off
    assert not list((out / "masks").glob(".*.tmp"))  # the killed writer's temp file was cleaned up
