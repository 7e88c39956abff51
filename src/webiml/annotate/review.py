"""``webiml review OUT``: a person accepts or rejects the pairs of a ``webiml annotate`` output folder.

:class:`ReviewStore` holds the folder's annotated pairs (``annotations.jsonl``, status ``ok``) and the human
decisions, kept in ``OUT/review.json`` (``{"manifest": {...}, "decisions": {pair_id: {"decision", "at"}}}``).
A pair is in the manifest of kept samples ``OUT/manifest.jsonl`` when a person accepted it, or, without a
decision, when the QES rule kept it (``kept`` in ``annotations.jsonl``); ``webiml fit`` trains on that
manifest. Accepting adds the pair's record (the same record ``webiml annotate`` writes), rejecting removes it,
undoing returns the pair to the QES rule.

Every decision writes ``review.json`` first, then ``manifest.jsonl``, each atomically (a temporary file, then a
rename: :mod:`webiml.io`), so a reader sees the old file or the new one, never a part. A process killed between
the two writes leaves a decision that the manifest does not show yet; :meth:`ReviewStore.sync` (run when the
store opens) brings the manifest in line with the decisions again. It also re-applies them after
``webiml annotate`` has merged the folder again (which writes the manifest from the QES rule alone).

:func:`make_server` serves the page: the standard library's threading HTTP server on 127.0.0.1, one jinja2
template (autoescaped), inline CSS and JS, thumbnails (``OUT/thumbs`` where the contact sheet made them, else
made from the files) and an overlay of the soft mask on the forgery. Decisions are POSTed with a token that
is only in the page, and requests naming another host are refused (a web page elsewhere cannot decide).
"""

from __future__ import annotations

import datetime
import functools
import json
import os
import secrets
import threading
from collections import deque
from collections.abc import Callable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlsplit

from webiml.io import atomic_write_json

__all__ = ["DECISIONS_FILE", "KINDS", "PAGE_SIZE", "ReviewStore", "make_server", "serve"]

DECISIONS_FILE = "review.json"
KINDS = ("original", "forged", "mask", "overlay")
PAGE_SIZE = 100
THUMB_SIDE = 256
DECISIONS = ("accept", "reject")


class ReviewStore:
    """The annotated pairs of ``out`` and the human decisions about them (thread safe).

    Args:
        out: a ``webiml annotate`` output folder (with ``annotations.jsonl``).
    """

    def __init__(self, out: str | os.PathLike[str]) -> None:
        self.out = Path(out).resolve()
        ann = self.out / "annotations.jsonl"
        if not ann.is_file():
            raise FileNotFoundError(f"{ann} not found: give the output folder of `webiml annotate`")
        self.pairs: list[dict[str, Any]] = []
        with ann.open(encoding="utf-8") as fh:
            for n, line in enumerate(fh, start=1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as err:
                    raise ValueError(f"{ann}:{n}: invalid JSON ({err.msg})") from None
                if isinstance(row, dict) and row.get("status") == "ok" and row.get("mask") and row.get("pair_id"):
                    self.pairs.append(row)
        self.index = {str(r["pair_id"]): i for i, r in enumerate(self.pairs)}
        self._lock = threading.Lock()
        for tmp in self.out.glob(".*.tmp"):  # temporary files of a save that was killed
            if tmp.name.startswith((f".{DECISIONS_FILE}.", ".manifest.jsonl.")):
                tmp.unlink(missing_ok=True)
        state = self._read_state()
        self.decisions: dict[str, dict[str, str]] = {
            pid: d for pid, d in state.get("decisions", {}).items()
            if pid in self.index and isinstance(d, dict) and d.get("decision") in DECISIONS
        }
        self.settings: dict[str, Any] = state.get("manifest") or self._infer_settings()

    # -- files --------------------------------------------------------------------------------------

    @property
    def manifest_path(self) -> Path:
        return self.out / "manifest.jsonl"

    @property
    def decisions_path(self) -> Path:
        return self.out / DECISIONS_FILE

    def _read_state(self) -> dict[str, Any]:
        if not self.decisions_path.is_file():
            return {}
        try:
            state = json.loads(self.decisions_path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as err:
            raise ValueError(f"{self.decisions_path}: invalid JSON ({err.msg})") from None
        return state if isinstance(state, dict) else {}

    def _read_manifest(self) -> list[Any]:
        from webiml.data.manifest import read_manifest

        return read_manifest(self.manifest_path) if self.manifest_path.is_file() else []

    def _infer_settings(self) -> dict[str, Any]:
        """The manifest record settings of the annotate run (source, ignore band, QES as weight), read from
        a record it wrote; ``webiml annotate``'s defaults when the manifest holds none."""
        for rec in self._read_manifest():
            i = self.index.get(str(rec.extra.get("pair_id")))
            if i is not None:
                q = float(self.pairs[i]["qes"])
                return {"source": rec.source, "ignore_band": None if rec.ignore_band is None else list(rec.ignore_band),
                        "qes_weight": rec.weight != 1.0 and abs(rec.weight - q) < 1e-9}
        return {"source": "annotated", "ignore_band": [7, 193], "qes_weight": False}

    def _record(self, row: dict[str, Any]) -> Any:
        """The manifest record of an annotated pair, as ``webiml annotate`` writes it."""
        from webiml.data.manifest import ManifestRecord
        from webiml.data.masks import IgnoreBand

        q = float(row["qes"])
        band = self.settings.get("ignore_band")
        return ManifestRecord(
            image=str(row["forged"]), mask=str(self.out / row["mask"]), label=1, source=str(self.settings["source"]),
            weight=q if self.settings.get("qes_weight") else 1.0,
            ignore_band=None if band is None else IgnoreBand(int(band[0]), int(band[1])),
            extra={"category": row.get("category"), "qes": q, "pair_id": row["pair_id"]},
        )

    # -- decisions ----------------------------------------------------------------------------------

    def wanted(self, pair_id: str) -> bool:
        """Whether the pair belongs in the manifest: the person's decision, else the QES rule."""
        d = self.decisions.get(pair_id)
        if d is not None:
            return d["decision"] == "accept"
        return bool(self.pairs[self.index[pair_id]].get("kept"))

    def state(self, pair_id: str) -> str:
        """``accepted`` / ``rejected`` (by a person) or ``kept`` / ``dropped`` (by the QES rule)."""
        d = self.decisions.get(pair_id)
        if d is not None:
            return "accepted" if d["decision"] == "accept" else "rejected"
        return "kept" if self.pairs[self.index[pair_id]].get("kept") else "dropped"

    def decide(self, pair_id: str, decision: str | None) -> dict[str, Any]:
        """Record ``accept``, ``reject`` or ``None`` (undo: back to the QES rule) and update the manifest."""
        if pair_id not in self.index:
            raise KeyError(pair_id)
        if decision is not None and decision not in DECISIONS:
            raise ValueError(f"decision must be one of {DECISIONS} or None, got {decision!r}")
        with self._lock:
            old = self.decisions.get(pair_id)
            if decision is None:
                self.decisions.pop(pair_id, None)
            elif old is None or old["decision"] != decision:
                at = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
                self.decisions[pair_id] = {"decision": decision, "at": at}
            if self.decisions.get(pair_id) != old or not self.decisions_path.is_file():
                self._write_decisions()
            self._sync_locked()
            return {"pair_id": pair_id, "state": self.state(pair_id), "in_manifest": self.wanted(pair_id),
                    "counts": self.counts()}

    def _write_decisions(self) -> None:
        atomic_write_json(self.decisions_path, {"version": 1, "manifest": self.settings,
                                                "decisions": dict(sorted(self.decisions.items()))})

    def sync(self) -> tuple[int, int]:
        """Make the manifest agree with the decisions; ``(added, removed)``. Writes only on a change."""
        with self._lock:
            return self._sync_locked()

    def _sync_locked(self) -> tuple[int, int]:
        from webiml.data.manifest import write_manifest

        records = self._read_manifest()
        present = {str(r.extra.get("pair_id")) for r in records if str(r.extra.get("pair_id")) in self.index}
        drop = {pid for pid in present if not self.wanted(pid)}
        add = [pid for pid in self.index if pid not in present and self.wanted(pid)]
        if not drop and not add:
            return 0, 0
        merged, pending = [], deque(self.index[pid] for pid in add)  # ascending: the order of annotations.jsonl
        for rec in records:  # each added record goes before the first later pair, as `webiml annotate` orders them
            if str(rec.extra.get("pair_id")) in drop:
                continue
            at = self.index.get(str(rec.extra.get("pair_id")), -1)
            while pending and pending[0] < at:
                merged.append(self._record(self.pairs[pending.popleft()]))
            merged.append(rec)
        merged += [self._record(self.pairs[i]) for i in pending]
        write_manifest(self.manifest_path, merged)
        return len(add), len(drop)

    def counts(self) -> dict[str, int]:
        states = [self.state(str(r["pair_id"])) for r in self.pairs]
        return {s: states.count(s) for s in ("accepted", "rejected", "kept", "dropped")} | {
            "in_manifest": sum(s in ("accepted", "kept") for s in states), "pairs": len(states)}

    def ordered(self, lowest_first: bool = False) -> list[dict[str, Any]]:
        """The pairs by QES, highest first (lowest first with ``lowest_first``); ties in file order."""
        sign = 1.0 if lowest_first else -1.0
        return sorted(self.pairs, key=lambda r: (sign * float(r["qes"]), self.index[str(r["pair_id"])]))

    # -- images -------------------------------------------------------------------------------------

    def _path(self, p: str) -> Path:
        """An image path of ``annotations.jsonl``: absolute, or relative to where annotate ran (tried from here),
        else to the folder."""
        path = Path(p)
        if path.is_absolute() or path.exists():
            return path
        return self.out / path

    def image(self, pair_id: str, kind: str) -> bytes:
        """A JPEG thumbnail of the pair: ``original``, ``forged``, ``mask`` (coloured) or ``overlay``."""
        if pair_id not in self.index or kind not in KINDS:
            raise KeyError(f"{pair_id}/{kind}")
        return self._image(pair_id, kind)

    @functools.lru_cache(maxsize=512)  # noqa: B019 (one store per server; the cache lives as long)
    def _image(self, pair_id: str, kind: str) -> bytes:
        from webiml.io import encode_image, read_mask
        from webiml.viz import colorize, overlay

        row = self.pairs[self.index[pair_id]]
        if kind in ("original", "forged", "mask"):
            thumb = self.out / "thumbs" / f"{pair_id}.{kind}.jpg"  # the contact sheet's (annotate/output.py)
            if thumb.is_file():
                return thumb.read_bytes()
        if kind == "mask":
            return encode_image(colorize(_shrink(read_mask(self.out / row["mask"])) / 255.0), "JPEG", quality=90)
        if kind == "overlay":
            forged = _shrink(self._array(row, "forged"))
            mask = _shrink(read_mask(self.out / row["mask"]), size=(forged.shape[1], forged.shape[0]))
            return encode_image(overlay(forged, mask / 255.0), "JPEG", quality=85)
        return encode_image(_shrink(self._array(row, kind)), "JPEG", quality=85)

    def _array(self, row: dict[str, Any], kind: str) -> Any:
        from webiml.io import read_image

        return read_image(self._path(str(row[kind])))


def _shrink(image: Any, side: int = THUMB_SIDE, size: tuple[int, int] | None = None) -> Any:
    """``image`` with its longer side at most ``side`` (or at ``size`` = (w, h)), bilinear."""
    import numpy as np
    from PIL import Image

    h, w = image.shape[:2]
    if size is None:
        f = min(1.0, side / max(h, w))
        size = (max(1, round(w * f)), max(1, round(h * f)))
    if size == (w, h):
        return np.asarray(image)
    return np.asarray(Image.fromarray(image).resize(size, Image.BILINEAR))


# --------------------------------------------------------------------------------------------------
# the page

_TEMPLATE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>webiml review: {{ folder }}</title>
<meta name="webiml-token" content="{{ token }}">
<style>
body { font-family: sans-serif; margin: 0; background: #f4f4f4; color: #222; }
header { position: sticky; top: 0; background: #222; color: #eee; padding: 8px 16px; z-index: 1; }
header kbd { background: #444; border-radius: 3px; padding: 0 4px; }
nav a { color: #9cf; margin-right: 12px; }
.pair { background: #fff; margin: 10px 16px; padding: 8px; border: 3px solid transparent; border-radius: 6px; }
.pair.current { border-color: #2a7de1; }
.pair h2 { font-size: 15px; margin: 0 0 6px 0; font-weight: normal; }
.pair figure { display: inline-block; margin: 0 6px 0 0; text-align: center; font-size: 12px; }
.pair img { max-width: 256px; max-height: 256px; display: block; background: #ddd; }
.state { font-weight: bold; padding: 1px 6px; border-radius: 3px; }
.state-accepted { background: #1f9d55; color: #fff; } .state-rejected { background: #c53030; color: #fff; }
.state-kept { background: #c6f6d5; } .state-dropped { background: #fed7d7; }
#error { color: #f88; }
</style></head>
<body>
<header>
<b>webiml review</b> {{ folder }} &mdash; {{ counts.pairs }} pairs, QES {{ "lowest" if lowest_first else "highest" }} first;
<span id="counts">{{ counts.in_manifest }}</span> in the manifest.
<kbd>a</kbd> accept <kbd>r</kbd> reject <kbd>u</kbd> undo (QES rule) <kbd>&darr;</kbd>/<kbd>j</kbd> next
<kbd>&uarr;</kbd>/<kbd>k</kbd> previous <span id="error"></span>
<nav>{% if page > 0 %}<a id="prev-page" href="?page={{ page - 1 }}&amp;at=last">previous page</a>{% endif %}
page {{ page + 1 }} / {{ pages }}
{% if page + 1 < pages %}<a id="next-page" href="?page={{ page + 1 }}">next page</a>{% endif %}</nav>
</header>
<main>
{% for p in rows %}
<section class="pair" id="pair-{{ loop.index0 }}" data-pair="{{ p.pair_id }}" data-state="{{ p.state }}">
<h2>#{{ p.rank }} <b>{{ p.pair_id }}</b> &middot; QES {{ "%.3f"|format(p.qes) }} &middot; {{ p.category }}
&middot; <span class="state state-{{ p.state }}">{{ p.state }}</span></h2>
{% for kind, caption in kinds %}<figure><img loading="lazy" src="img/{{ p.url_id }}/{{ kind }}.jpg" alt="{{ caption }}">
<figcaption>{{ caption }}</figcaption></figure>{% endfor %}
</section>
{% else %}<p>No annotated pairs in this folder.</p>
{% endfor %}
</main>
<script>
(function () {
  var rows = Array.prototype.slice.call(document.querySelectorAll(".pair"));
  var token = document.querySelector('meta[name="webiml-token"]').content;
  var params = new URLSearchParams(location.search);
  var cur = params.get("at") === "last" ? rows.length - 1 : 0;
  function show(i) {
    if (!rows.length) return;
    rows[cur].classList.remove("current");
    cur = Math.max(0, Math.min(rows.length - 1, i));
    rows[cur].classList.add("current");
    rows[cur].scrollIntoView({block: "center"});
  }
  function move(step) {
    var next = cur + step, prev = document.getElementById("prev-page"), nxt = document.getElementById("next-page");
    if (next >= rows.length && nxt) { location.href = nxt.href; return; }
    if (next < 0 && prev) { location.href = prev.href; return; }
    show(next);
  }
  function decide(decision) {
    var row = rows[cur];
    if (!row) return;
    fetch("decide", {method: "POST", headers: {"Content-Type": "application/json", "X-Webiml-Token": token},
                     body: JSON.stringify({pair_id: row.dataset.pair, decision: decision})})
      .then(function (r) { if (!r.ok) throw new Error(r.status + " " + r.statusText); return r.json(); })
      .then(function (res) {
        var badge = row.querySelector(".state");
        badge.textContent = res.state;
        badge.className = "state state-" + res.state;
        row.dataset.state = res.state;
        document.getElementById("counts").textContent = res.counts.in_manifest;
        document.getElementById("error").textContent = "";
      })
      .catch(function (err) { document.getElementById("error").textContent = "not saved: " + err.message; });
    if (decision !== null && cur + 1 < rows.length) show(cur + 1);
  }
  document.addEventListener("keydown", function (e) {
    if (e.ctrlKey || e.metaKey || e.altKey) return;
    var k = e.key;
    if (k === "a") decide("accept");
    else if (k === "r") decide("reject");
    else if (k === "u") decide(null);
    else if (k === "ArrowDown" || k === "ArrowRight" || k === "j") move(1);
    else if (k === "ArrowUp" || k === "ArrowLeft" || k === "k") move(-1);
    else return;
    e.preventDefault();
  });
  rows.forEach(function (row, i) { row.addEventListener("click", function () { show(i); }); });
  show(cur);
})();
</script>
</body></html>
"""


def render_page(store: ReviewStore, token: str, page: int = 0, lowest_first: bool = False) -> str:
    import jinja2

    ordered = store.ordered(lowest_first)
    pages = max(1, -(-len(ordered) // PAGE_SIZE))
    page = max(0, min(int(page), pages - 1))
    rows = [{"pair_id": r["pair_id"], "url_id": quote(str(r["pair_id"]), safe=""), "qes": float(r["qes"]),
             "category": r.get("category"), "state": store.state(str(r["pair_id"])), "rank": page * PAGE_SIZE + k + 1}
            for k, r in enumerate(ordered[page * PAGE_SIZE:(page + 1) * PAGE_SIZE])]
    env = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined)
    kinds = [("original", "original"), ("forged", "forgery"), ("mask", "soft mask"), ("overlay", "overlay")]
    return env.from_string(_TEMPLATE).render(folder=str(store.out), token=token, rows=rows, page=page, pages=pages,
                                             counts=store.counts(), lowest_first=lowest_first, kinds=kinds)


# --------------------------------------------------------------------------------------------------
# the server


def make_server(store: ReviewStore, port: int = 0, *, lowest_first: bool = False) -> ThreadingHTTPServer:
    """A threading HTTP server for ``store`` on ``127.0.0.1:port`` (0: a free port); call ``serve_forever``."""
    token = secrets.token_urlsafe(24)

    class Handler(BaseHTTPRequestHandler):
        server_version = "webiml-review"

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (the base class's name)
            pass  # keep the terminal for the URL and errors

        def _host_ok(self) -> bool:
            port = self.server.server_address[1]
            return self.headers.get("Host") in (f"127.0.0.1:{port}", f"localhost:{port}")

        def _send(self, status: int, body: bytes, ctype: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store" if ctype.startswith(("text/html", "application/json")) else "max-age=3600")
            self.end_headers()
            self.wfile.write(body)

        def _json(self, status: int, value: Any) -> None:
            self._send(status, json.dumps(value).encode("utf-8"), "application/json")

        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            if not self._host_ok():
                return self._send(HTTPStatus.FORBIDDEN, b"forbidden host", "text/plain")
            url = urlsplit(self.path)
            parts = [unquote(p) for p in url.path.split("/") if p]
            if not parts:
                query = parse_qs(url.query)
                try:
                    page = int(query.get("page", ["0"])[0])
                except ValueError:
                    page = 0
                text = render_page(store, token, page, lowest_first)
                return self._send(HTTPStatus.OK, text.encode("utf-8"), "text/html; charset=utf-8")
            if parts == ["state.json"]:
                return self._json(HTTPStatus.OK, {"counts": store.counts(), "decisions": dict(store.decisions)})
            if len(parts) == 3 and parts[0] == "img" and parts[2].endswith(".jpg"):
                try:
                    data = store.image(parts[1], parts[2][: -len(".jpg")])
                except KeyError:
                    return self._send(HTTPStatus.NOT_FOUND, b"no such image", "text/plain")
                except (OSError, ValueError) as err:
                    return self._send(HTTPStatus.NOT_FOUND, str(err).encode("utf-8"), "text/plain; charset=utf-8")
                return self._send(HTTPStatus.OK, data, "image/jpeg")
            return self._send(HTTPStatus.NOT_FOUND, b"not found", "text/plain")

        def do_POST(self) -> None:  # noqa: N802
            if not self._host_ok() or self.headers.get("X-Webiml-Token") != token:
                return self._json(HTTPStatus.FORBIDDEN, {"error": "forbidden"})
            if urlsplit(self.path).path != "/decide":
                return self._json(HTTPStatus.NOT_FOUND, {"error": "not found"})
            try:
                length = int(self.headers.get("Content-Length", "0"))
                if not 0 < length <= 1 << 16:
                    raise ValueError("bad length")
                body = json.loads(self.rfile.read(length))
                result = store.decide(str(body["pair_id"]), body.get("decision"))
            except KeyError:
                return self._json(HTTPStatus.NOT_FOUND, {"error": "unknown pair"})
            except (ValueError, TypeError) as err:
                return self._json(HTTPStatus.BAD_REQUEST, {"error": str(err)})
            except OSError as err:  # the save failed: the page says so, the files are as they were
                return self._json(HTTPStatus.INTERNAL_SERVER_ERROR, {"error": f"not saved: {err}"})
            return self._json(HTTPStatus.OK, result)

    server = ThreadingHTTPServer(("127.0.0.1", int(port)), Handler)
    server.daemon_threads = True
    return server


def serve(out: str | os.PathLike[str], port: int = 0, *, lowest_first: bool = False,
          echo: Callable[[str], None] | None = None) -> None:
    """Open ``out``, bring its manifest in line with the saved decisions, and serve the page until Ctrl-C."""
    echo = echo or functools.partial(print, flush=True)
    store = ReviewStore(out)
    added, removed = store.sync()
    if added or removed:
        echo(f"manifest.jsonl brought in line with {DECISIONS_FILE}: {added} added, {removed} removed")
    server = make_server(store, port, lowest_first=lowest_first)
    c = store.counts()
    echo(f"{c['pairs']} pairs, {c['in_manifest']} in the manifest ({c['accepted']} accepted, {c['rejected']} rejected "
         f"by you); decisions go to {store.out / DECISIONS_FILE} and {store.manifest_path}")
    echo(f"review at http://127.0.0.1:{server.server_address[1]}/  (Ctrl-C to stop)")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()

