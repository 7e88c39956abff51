"""What the inference and evaluation verbs write for people: per-image score tables (``scores.csv`` /
``scores.json``) and HTML reports (jinja2 templates, matplotlib figures)."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

from webiml.io import atomic_write_json, atomic_write_text

SCORE_FIELDS = ["path", "name", "width", "height", "image_score", "manipulated", "manipulated_area"]


def write_scores(out: Path, rows: list[dict[str, Any]], summary: dict[str, Any]) -> None:
    """``scores.csv`` (one row per image, ``SCORE_FIELDS``) and ``scores.json`` (``summary`` + ``images``), atomic;
    the files of ``webiml localize`` and ``webiml predict``."""
    import csv
    import io

    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=SCORE_FIELDS, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(out / "scores.csv", buf.getvalue())
    atomic_write_json(out / "scores.json", {**summary, "images": rows})


# -- figures ----------------------------------------------------------------------------------------------
ERROR_COLOURS = {"TP": (46, 204, 64), "FP": (255, 65, 54), "FN": (0, 116, 217), "TN": (40, 40, 40)}
"""Colours of the error map: true positive green, false positive red, false negative blue, true negative dark."""

PR_BINS = 256


def error_map(pred: Any, truth: Any) -> Any:
    """An RGB ``uint8`` map of a binary prediction against a binary truth (``ERROR_COLOURS``)."""
    import numpy as np

    pred, truth = np.asarray(pred, dtype=bool), np.asarray(truth, dtype=bool)
    out = np.empty((*pred.shape, 3), dtype=np.uint8)
    for key, sel in (("TN", ~pred & ~truth), ("TP", pred & truth), ("FP", pred & ~truth), ("FN", ~pred & truth)):
        out[sel] = ERROR_COLOURS[key]
    return out


def pixel_histograms(prob: Any, truth: Any) -> tuple[Any, Any]:
    """Counts of positive and negative pixels per probability bin (``PR_BINS``): summed over images and sets
    they give the exact PR curve at those thresholds, at any data size."""
    import numpy as np

    p = np.clip(np.asarray(prob, dtype=np.float32), 0, 1)
    t = np.asarray(truth)
    bins = np.minimum((p * PR_BINS).astype(np.int64), PR_BINS - 1)
    valid = t >= 0  # IGNORE (-1) pixels count for neither
    pos = np.bincount(bins[valid & (t > 0.5)], minlength=PR_BINS)
    neg = np.bincount(bins[valid & (t <= 0.5)], minlength=PR_BINS)
    return pos.astype(np.int64), neg.astype(np.int64)


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save_figure(fig: Any, path: Path) -> str:
    import io

    from webiml.io import atomic_write_bytes

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    _pyplot().close(fig)
    atomic_write_bytes(path, buf.getvalue())
    return path.name


def pr_curve_figure(pos: Any, neg: Any, path: Path, threshold: float) -> str:
    """Pixel precision-recall curve from :func:`pixel_histograms` counts, the operating point at ``threshold`` marked."""
    import numpy as np

    plt = _pyplot()
    tp = np.cumsum(np.asarray(pos)[::-1])[::-1].astype(np.float64)  # pixels with prob >= bin's lower edge
    fp = np.cumsum(np.asarray(neg)[::-1])[::-1].astype(np.float64)
    recall = tp / max(tp[0], 1.0)
    precision = np.divide(tp, tp + fp, out=np.ones_like(tp), where=(tp + fp) > 0)
    fig, ax = plt.subplots(figsize=(4, 3.2))
    ax.plot(recall, precision, color="#0074d9")
    k = min(int(threshold * PR_BINS), PR_BINS - 1)
    ax.plot([recall[k]], [precision[k]], "o", color="#ff4136", label=f"threshold {threshold:g}")
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.set_title("pixel precision-recall")
    ax.legend(loc="lower left")
    return _save_figure(fig, path)


def histogram_figure(values: list[float], path: Path, xlabel: str, title: str, threshold: float | None = None) -> str:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(4, 3.2))
    ax.hist([v for v in values if v == v], bins=20, range=(0, 1), color="#7fdbff", edgecolor="#0074d9")
    if threshold is not None:
        ax.axvline(threshold, color="#ff4136", label=f"threshold {threshold:g}")
        ax.legend()
    ax.set_xlabel(xlabel)
    ax.set_ylabel("images")
    ax.set_title(title)
    return _save_figure(fig, path)


def colour_bar_figure(path: Path, threshold: float | None = None, label: str = "manipulation probability") -> str:
    """The heatmap's colour scale (:func:`webiml.viz.colorize`), 0 to 1, the pixel threshold marked (white line)."""
    import numpy as np

    from webiml.viz import colorize

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(4, 0.6))
    ax.imshow(colorize(np.linspace(0, 1, 256)[None].repeat(8, 0)), aspect="auto", extent=(0, 1, 0, 1))
    ax.set_yticks([])
    if threshold is not None:
        ax.axvline(threshold, color="white", linewidth=2)
        label += f" (white line: pixel threshold {threshold:g})"
    ax.set_xlabel(label)
    return _save_figure(fig, path)


# -- the page -----------------------------------------------------------------------------------------------
_BASE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{{ title }}</title>
<style>
body{font-family:system-ui,sans-serif;margin:2em;background:#fafafa;color:#222}
table{border-collapse:collapse;margin:0.5em 0}td,th{padding:4px 8px;border-bottom:1px solid #ddd;text-align:right}
th:first-child,td:first-child{text-align:left}.row{display:flex;gap:8px;align-items:flex-start;margin:1em 0;flex-wrap:wrap}
figure{margin:0;text-align:center;font-size:0.85em}figure img{max-width:240px;max-height:240px;border:1px solid #ccc}
.plots img{max-width:420px}.key span{display:inline-block;width:1em;height:1em;vertical-align:middle;margin:0 4px 0 12px}
.key span.line{height:0;border-top:3px solid}.colour-bar{max-width:420px}
.scores{min-width:180px;font-size:0.9em}.verdict-m{color:#c0392b;font-weight:bold}.verdict-a{color:#27ae60;font-weight:bold}
{% block style %}{% endblock %}
</style></head><body>
<h1>{{ title }}</h1>
{% block body %}{% endblock %}
</body></html>
"""
"""The pages' frame (title, style); a page's template extends it (``{% extends "base.html" %}``)."""

_TEMPLATE = """{% extends "base.html" %}{% block body %}
{% if intro %}<p>{{ intro }}</p>{% endif %}
<p class="thresholds">Thresholds: pixel <b>{{ "%g"|format(pixel_threshold) }}</b> (mask{% if has_truth %} and error map{% endif %}), image <b>{{ "%g"|format(image_threshold) }}</b>
(verdict "manipulated" when the image score is at least this).</p>
<p class="key">Overlay:<span style="background:rgb{{ overlay_tint }}"></span>red tint = manipulation probability (the deeper, the higher)
<span class="line" style="border-color:rgb{{ outline_colour }}"></span>outline = the mask at the pixel threshold.
{% if has_truth %}<br>Error map:{% for name, rgb in error_colours %}<span style="background:rgb{{ rgb }}"></span>{{ name }}{% endfor %}{% endif %}</p>
<p>Heatmap colours:<br><img class="colour-bar" src="{{ colour_bar }}" alt="colour bar"></p>
{% for set in sets %}
<h2 id="set-{{ set.name }}">{{ set.name }}</h2>
{% if set.metrics %}<table><tr><th>metric</th><th>value</th></tr>
{% for key, value in set.metrics %}<tr><td>{{ key }}</td><td>{{ value }}</td></tr>{% endfor %}</table>{% endif %}
<div class="row plots">{% for caption, src in set.plots %}<figure><img src="{{ src }}" alt="{{ caption }}"><figcaption>{{ caption }}</figcaption></figure>{% endfor %}</div>
{% if set.rows %}<h3>{{ set.rows_title }}</h3>{% endif %}
{% for row in set.rows %}<div class="row">
<div class="scores"><b>{{ row.title }}</b><br>{% for key, value in row.fields %}{{ key }}: {% if key == "verdict" %}<span class="verdict-{{ 'a' if value.endswith('authentic') else 'm' }}">{{ value }}</span>{% else %}{{ value }}{% endif %}<br>{% endfor %}</div>
{% for caption, src in row.images %}<figure><img src="{{ src }}" alt="{{ caption }}"><figcaption>{{ caption }}</figcaption></figure>{% endfor %}
</div>{% endfor %}
{% endfor %}
{% endblock %}
"""


@functools.lru_cache(maxsize=1)
def environment() -> Any:
    """The pages' jinja2 environment: autoescaped, undefined names are errors, ``base.html`` and ``report.html``
    loadable by name."""
    import jinja2

    return jinja2.Environment(loader=jinja2.DictLoader({"base.html": _BASE, "report.html": _TEMPLATE}),
                              autoescape=True, undefined=jinja2.StrictUndefined)


def render_page(path: Path, template: str, **context: Any) -> Path:
    """Render ``template`` (a template name or its source, e.g. ``{% extends "base.html" %}...``) with
    ``context`` and write it atomically to ``path``."""
    env = environment()
    tpl = env.get_template(template) if template in env.loader.list_templates() else env.from_string(template)
    path = Path(path)
    atomic_write_text(path, tpl.render(**context))
    return path


def format_value(value: Any) -> str:
    """Counts as integers, other numbers with 4 decimals, undefined (NaN / None) as "-"."""
    if value is None or (isinstance(value, float) and value != value):
        return "-"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int) or (isinstance(value, float) and value.is_integer() and abs(value) >= 2):
        return str(int(value))
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


def render_report(path: Path, *, title: str, sets: list[dict[str, Any]], pixel_threshold: float, image_threshold: float,
                  intro: str = "", has_truth: bool = True) -> Path:
    """Write the HTML page (jinja2, autoescaped) atomically; images are referenced relative to it. ``sets``:
    dicts with ``name``, ``metrics`` [(key, text)], ``plots`` [(caption, src)], ``rows_title`` and ``rows``
    [{title, fields [(key, text)], images [(caption, src)]}]."""
    from webiml.viz import OUTLINE_COLOUR, OVERLAY_TINT

    path = Path(path)
    colour_bar = colour_bar_figure(path.parent / "colour_bar.png", pixel_threshold)
    return render_page(path, "report.html", title=title, intro=intro, sets=sets, pixel_threshold=pixel_threshold,
                       image_threshold=image_threshold, has_truth=has_truth, overlay_tint=OVERLAY_TINT,
                       outline_colour=OUTLINE_COLOUR, colour_bar=colour_bar,
                       error_colours=[(k, v) for k, v in ERROR_COLOURS.items() if k != "TN"])


def verdict(score: float, image_threshold: float) -> str:
    return "manipulated" if score >= image_threshold else "authentic"


def metrics_once(results: dict[str, Any]) -> dict[str, Any]:
    """Each metric once: ``{stage}/{set}/{metric}`` per set, and the mean over sets ``{stage}/{metric}`` only
    when there are several sets (with one set the mean repeats it; it is still logged, for checkpoint monitors)."""
    sets: dict[str, set[str]] = {}
    for key in results:
        parts = key.split("/")
        if len(parts) == 3:
            sets.setdefault(parts[0], set()).add(parts[1])
    return {k: v for k, v in results.items()
            if not (len(k.split("/")) == 2 and len(sets.get(k.split("/")[0], ())) == 1)}
