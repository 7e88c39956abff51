"""`webiml review`: human accept / reject decisions over a `webiml annotate` folder update the manifest of kept
samples (accept adds, reject removes, idempotent), saves are atomic (a crash or SIGKILL between the temporary
file and the rename leaves the old manifest, and the saved decision is applied on the next start), the server
refuses other hosts and token-less posts, and the page works with its keys in a real headless chromium."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from browser import browser, page_images
from test_annotate import make_pair_folders
from webiml.annotate.review import DECISIONS_FILE, ReviewStore, make_server
from webiml.cli import main
from webiml.data.manifest import read_manifest

N_PAIRS = 6  # p00, p03 kept by the QES rule; the others dropped (see test_annotate._pair)


@pytest.fixture(scope="module")
def annotated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("review")
    pairs = make_pair_folders(root / "pairs", N_PAIRS)
    out = root / "out"
    assert main(["annotate", str(pairs), "-o", str(out), "--annotator", "baseline", "--no-progress", "--workers", "0",
                 "--report-limit", "2"]) == 0  # thumbnails for two pairs; the page makes the others' itself
    return out


@pytest.fixture()
def out(annotated: Path, tmp_path: Path) -> Path:
    dest = tmp_path / "out"
    shutil.copytree(annotated, dest)
    return dest


def _ids(out: Path) -> list[str]:
    return [r.extra["pair_id"] for r in read_manifest(out / "manifest.jsonl")]


def test_accept_adds_reject_removes_idempotent(out: Path) -> None:
    original = (out / "manifest.jsonl").read_bytes()
    store = ReviewStore(out)
    assert _ids(out) == ["p00", "p03"] and store.sync() == (0, 0)
    assert [store.state(f"p{i:02d}") for i in range(N_PAIRS)] == ["kept", "dropped", "dropped", "kept", "dropped", "dropped"]

    res = store.decide("p00", "reject")
    assert res["state"] == "rejected" and not res["in_manifest"] and _ids(out) == ["p03"]
    once = (out / "manifest.jsonl").read_bytes()
    store.decide("p00", "reject")
    assert (out / "manifest.jsonl").read_bytes() == once  # idempotent
    store.decide("p00", "accept")
    assert (out / "manifest.jsonl").read_bytes() == original  # re-added as annotate wrote it, in its place

    res = store.decide("p01", "accept")
    assert res["in_manifest"] and res["counts"]["in_manifest"] == 3 and _ids(out) == ["p00", "p01", "p03"]
    rec = read_manifest(out / "manifest.jsonl")[1]
    assert rec.label == 1 and rec.source == "annotated" and tuple(rec.ignore_band) == (7, 193) and rec.weight == 1.0
    assert Path(rec.mask).is_file() and Path(rec.image).is_file() and rec.image.endswith(("1.png", "forged.png"))
    assert json.loads((out / "manifest.jsonl").read_text().splitlines()[1])["mask"] == "masks/p01.png"  # relative
    twice = (out / "manifest.jsonl").read_bytes()
    store.decide("p01", "accept")
    assert (out / "manifest.jsonl").read_bytes() == twice

    saved = json.loads((out / DECISIONS_FILE).read_text())
    assert {k: v["decision"] for k, v in saved["decisions"].items()} == {"p00": "accept", "p01": "accept"}
    assert saved["manifest"] == {"source": "annotated", "ignore_band": [7, 193], "qes_weight": False}
    again = ReviewStore(out)  # the decisions survive a restart
    assert again.state("p01") == "accepted" and again.sync() == (0, 0)

    store.decide("p01", None)  # undo: back to the QES rule
    assert (out / "manifest.jsonl").read_bytes() == original and store.state("p01") == "dropped"
    with pytest.raises(KeyError):
        store.decide("nope", "accept")
    with pytest.raises(ValueError):
        store.decide("p00", "maybe")


def test_annotate_merging_again_then_review_apply_restores_decisions(out: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store = ReviewStore(out)
    store.decide("p00", "reject")
    store.decide("p02", "accept")
    assert _ids(out) == ["p02", "p03"]
    pairs = Path(json.loads((out / "annotations.jsonl").read_text().splitlines()[0])["forged"]).parents[1]
    assert main(["annotate", str(pairs), "-o", str(out), "--annotator", "baseline", "--no-progress", "--workers", "0",
                 "--report-limit", "2"]) == 0
    assert _ids(out) == ["p00", "p03"]  # the merge writes the QES rule's manifest
    capsys.readouterr()
    assert main(["review", str(out), "--apply"]) == 0
    assert "1 accepted, 1 rejected" in capsys.readouterr().out and _ids(out) == ["p02", "p03"]
    assert main(["review", str(out.parent / "missing")]) == 2  # not an annotate folder: one error line


def test_crash_between_temp_file_and_rename_keeps_the_old_manifest(out: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import webiml.io

    old = (out / "manifest.jsonl").read_bytes()
    store = ReviewStore(out)
    real_replace = webiml.io.os.replace

    def crash(src: str, dst: str | Path) -> None:
        if str(dst).endswith("manifest.jsonl"):
            assert Path(src).read_text().count("\n") == 3  # the new manifest is complete in the temporary file
            raise OSError("simulated crash before the rename")
        real_replace(src, dst)

    monkeypatch.setattr(webiml.io.os, "replace", crash)
    with pytest.raises(OSError, match="simulated"):
        store.decide("p04", "accept")
    assert (out / "manifest.jsonl").read_bytes() == old and len(read_manifest(out / "manifest.jsonl")) == 2
    assert not list(out.glob(".*.tmp"))
    monkeypatch.setattr(webiml.io.os, "replace", real_replace)
    assert ReviewStore(out).sync() == (1, 0)  # the saved decision reaches the manifest on the next start
    assert _ids(out) == ["p00", "p03", "p04"]


_KILL = """
import os, signal, sys
import webiml.io
from webiml.annotate.review import ReviewStore
real = os.replace
def replace(src, dst):
    if str(dst).endswith(sys.argv[2]):
        os.kill(os.getpid(), signal.SIGKILL)  # the temporary file is written, the rename never happens
    real(src, dst)
webiml.io.os.replace = replace
ReviewStore(sys.argv[1]).decide("p03", "reject")
"""


@pytest.mark.parametrize("killed_in", ["manifest.jsonl", DECISIONS_FILE])
def test_sigkill_during_a_save_loses_nothing(out: Path, killed_in: str) -> None:
    old = (out / "manifest.jsonl").read_bytes()
    proc = subprocess.run([sys.executable, "-c", _KILL, str(out), killed_in], capture_output=True, text=True, timeout=120)
    assert proc.returncode == -9, proc.stderr
    assert (out / "manifest.jsonl").read_bytes() == old and _ids(out) == ["p00", "p03"]  # the old one, whole
    assert list(out.glob(f".{killed_in}.*.tmp"))  # the killed save's temporary file
    store = ReviewStore(out)  # removes it, then applies what was saved
    assert not list(out.glob(".*.tmp"))
    store.sync()
    if killed_in == DECISIONS_FILE:  # killed before the decision was saved: nothing changed
        assert not (out / DECISIONS_FILE).exists() and _ids(out) == ["p00", "p03"]
    else:  # the decision was saved; the manifest follows it now
        assert json.loads((out / DECISIONS_FILE).read_text())["decisions"]["p03"]["decision"] == "reject"
        assert _ids(out) == ["p00"]


def test_page_is_split_into_pages_by_qes(out: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import webiml.annotate.review as review

    monkeypatch.setattr(review, "PAGE_SIZE", 4)
    store = ReviewStore(out)
    order = [r["pair_id"] for r in store.ordered()]
    assert [float(r["qes"]) for r in store.ordered()] == sorted((float(r["qes"]) for r in store.pairs), reverse=True)
    assert [float(r["qes"]) for r in store.ordered(lowest_first=True)] == sorted(float(r["qes"]) for r in store.pairs)
    first, second = review.render_page(store, "tok", 0), review.render_page(store, "tok", 1)
    assert first.count('class="pair"') == 4 and 'id="next-page"' in first and 'id="prev-page"' not in first
    assert second.count('class="pair"') == 2 and 'id="prev-page"' in second and f'data-pair="{order[5]}"' in second
    assert review.render_page(store, "tok", 99) == second  # out of range: the last page


def test_review_verb_prints_the_url_and_serves(out: Path) -> None:
    import os

    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parents[1] / "src"),
                                                        os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen([sys.executable, "-m", "webiml", "review", str(out)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)
    try:
        lines = [proc.stdout.readline() for _ in range(2)]  # type: ignore[union-attr]
        assert "6 pairs, 2 in the manifest" in lines[0], lines
        url = lines[1].split()[2]
        assert url.startswith("http://127.0.0.1:")
        with urllib.request.urlopen(url, timeout=30) as resp:
            assert resp.headers["Content-Type"].startswith("text/html") and b"p03" in resp.read()
    finally:
        proc.terminate()
        proc.communicate(timeout=30)


@contextmanager
def _serving(out: Path) -> Iterator[str]:
    server = make_server(ReviewStore(out), 0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


def _status(req: urllib.request.Request | str) -> int:
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status
    except urllib.error.HTTPError as err:
        return err.code


def test_server_serves_images_and_refuses_foreign_posts(out: Path) -> None:
    with _serving(out) as url:
        with urllib.request.urlopen(url + "img/p05/overlay.jpg", timeout=30) as resp:  # no thumbnail: made here
            assert resp.headers["Content-Type"] == "image/jpeg" and resp.read(3) == b"\xff\xd8\xff"
        assert _status(url + "img/p99/overlay.jpg") == 404 and _status(url + "img/p00/../../x.jpg") == 404
        body = json.dumps({"pair_id": "p01", "decision": "accept"}).encode()
        assert _status(urllib.request.Request(url + "decide", data=body, method="POST")) == 403  # no token
        other = urllib.request.Request(url, headers={"Host": "evil.example:80"})
        assert _status(other) == 403
    assert _ids(out) == ["p00", "p03"]


def test_review_page_keys_in_browser(out: Path) -> None:
    pytest.importorskip("selenium")  # skips cleanly without it; browser() skips without chromium
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    order = [r["pair_id"] for r in ReviewStore(out).ordered()]
    assert order[:2] in (["p00", "p03"], ["p03", "p00"])  # highest QES first: the two kept pairs
    with browser() as driver, _serving(out) as url:
        driver.get(url)
        assert driver.title.startswith("webiml review")
        rows = driver.find_elements(By.CSS_SELECTOR, "section.pair")
        assert [r.get_attribute("data-pair") for r in rows] == order
        body = driver.find_element(By.TAG_NAME, "body")
        body.send_keys("r")  # row 0 rejected, the page moves on to row 1
        body.send_keys("a")  # row 1 (kept) accepted, on to row 2
        body.send_keys(Keys.ARROW_DOWN)  # row 3
        body.send_keys("a")  # row 3 (dropped) accepted

        def states(d: object) -> list[str] | bool:
            got = [r.get_attribute("data-state") for r in rows]
            return got if got[0] == "rejected" and got[1] == "accepted" and got[3] == "accepted" else False

        got = WebDriverWait(driver, 30).until(states)
        assert got[2] == "dropped" and "current" in rows[4].get_attribute("class")
        WebDriverWait(driver, 30).until(lambda d: all(ok for _, ok in page_images(d)[:8]))  # the first two rows
        assert len(page_images(driver)) == 4 * N_PAIRS
    assert _ids(out) == sorted([order[1], order[3]])
    saved = json.loads((out / DECISIONS_FILE).read_text())["decisions"]
    assert {k: v["decision"] for k, v in saved.items()} == {order[0]: "reject", order[1]: "accept", order[3]: "accept"}
