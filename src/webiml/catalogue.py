"""The zoo catalogue (``checkpoints.yaml``): schema, validation, listing.

Light on purpose (no torch, no model imports) so that ``webiml zoo list`` is instant; loading lives in
:mod:`webiml.hub`, which re-exports these names.
"""

from __future__ import annotations

import fnmatch
import os
import re
from collections.abc import Collection
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

__all__ = ["STATUSES", "CatalogueEntry", "catalogue_path", "hub_license", "list_models", "load_catalogue", "validate_catalogue"]

STATUSES = ("available", "converted", "needs-conversion", "unreleased-upstream")


HUB_LICENSES = ("apache-2.0", "mit", "bsd-3-clause", "cc-by-4.0", "cc-by-sa-4.0", "cc-by-nc-4.0", "cc-by-nc-sa-4.0",
                "cc-by-nc-nd-4.0", "openrail", "gpl-3.0", "agpl-3.0")
"""Hugging Face licence ids webiml recognises at the start of a catalogue ``license`` text."""


def hub_license(text: str) -> tuple[str, str | None]:
    """The Hub metadata (``license``, ``license_name``) for a catalogue licence text, which describes the
    *weights* first: a known id at its start (``"CC-BY-NC-4.0 (upstream weights)"`` -> ``cc-by-nc-4.0``);
    any mention of non-commercial use without an NC id -> ``other`` / ``non-commercial-research`` (never a
    permissive id for restricted weights); "no licence (granted)" -> ``other`` / ``no-licence-granted``; otherwise
    ``other`` / ``unknown`` or ``unspecified``."""
    first = text.strip().split(" ")[0].strip(",;:()").lower() if text.strip() else ""
    restricted = re.search(r"non-?commercial|\bnc\b", text, re.IGNORECASE) is not None
    if first in HUB_LICENSES and (not restricted or "-nc" in first):
        return first, None
    if restricted:
        return "other", "non-commercial-research"
    if re.search(r"\bno licen[cs]e\b", text, re.IGNORECASE):
        return "other", "no-licence-granted"
    return "other", "unknown" if "unknown" in text.lower() else "unspecified"


@dataclass(frozen=True)
class CatalogueEntry:
    """One model of the zoo (an entry of ``checkpoints.yaml``)."""

    name: str
    status: str
    architecture: str
    config: dict[str, Any]
    description: str = ""
    task: str = "iml"
    weights: dict[str, Any] = field(default_factory=dict)
    sha256: str | None = None
    normalization: dict[str, Any] = field(default_factory=dict)
    training: dict[str, Any] = field(default_factory=dict)
    metrics: list[dict[str, Any]] = field(default_factory=list)
    license: str = ""
    thresholds: dict[str, float] = field(default_factory=dict)
    paper: str | None = None
    notes: str = ""

    @property
    def license_short(self) -> str:
        """The weights' licence in a word (``webiml zoo list``): the Hub id, or its name when ``other``."""
        license_id, name = hub_license(self.license)
        return name if license_id == "other" and name else license_id

    @property
    def loadable(self) -> bool:
        return self.status in ("available", "converted") and bool(self.weights.get("embedded") or self.weights.get("hub"))


_REQUIRED = ("name", "status", "architecture", "config", "license", "training")


def catalogue_path() -> Path:
    """Path of the catalogue shipped inside the package (``checkpoints.yaml`` at the repo root links to it)."""
    return Path(str(resources.files("webiml") / "checkpoints.yaml"))


def validate_catalogue(data: Any, where: str = "checkpoints.yaml", architectures: Collection[str] | None = None) -> list[CatalogueEntry]:
    """Check the catalogue's schema and return its entries; raises ``ValueError`` naming the entry.

    ``architectures``: the known model class names; when given, every loadable entry's architecture must
    be one (``webiml.hub.validate_catalogue`` passes the registered classes; listing the zoo does not
    import the models, loading a model checks its architecture anyway)."""
    if not isinstance(data, dict) or not isinstance(data.get("models"), list):
        raise ValueError(f"{where}: expected a mapping with a 'models' list")
    entries: list[CatalogueEntry] = []
    seen: set[str] = set()
    for i, raw in enumerate(data["models"]):
        label = f"{where}: models[{i}]" + (f" ({raw.get('name')})" if isinstance(raw, dict) else "")
        if not isinstance(raw, dict):
            raise ValueError(f"{label}: expected a mapping")
        missing = [k for k in _REQUIRED if k not in raw]
        if missing:
            raise ValueError(f"{label}: missing {missing}")
        unknown = set(raw) - set(CatalogueEntry.__dataclass_fields__)
        if unknown:
            raise ValueError(f"{label}: unknown keys {sorted(unknown)}")
        if raw["name"] in seen:
            raise ValueError(f"{label}: duplicate name")
        seen.add(raw["name"])
        if raw["status"] not in STATUSES:
            raise ValueError(f"{label}: status must be one of {STATUSES}, got {raw['status']!r}")
        entry = CatalogueEntry(**raw)
        if architectures is not None and entry.architecture not in architectures and entry.status in ("available", "converted"):
            raise ValueError(f"{label}: unknown architecture {entry.architecture!r}")
        if entry.status in ("available", "converted"):
            w = entry.weights
            if not (w.get("embedded") or w.get("hub")):
                raise ValueError(f"{label}: an available model needs weights.embedded or weights.hub")
            if w.get("hub") and not (isinstance(w["hub"], dict) and w["hub"].get("repo_id") and w["hub"].get("revision")):
                raise ValueError(f"{label}: weights.hub needs repo_id and a pinned revision")
            if not (isinstance(entry.sha256, str) and len(entry.sha256) == 64):
                raise ValueError(f"{label}: an available model needs its sha256")
            for m in entry.metrics:
                if "command" not in m:
                    raise ValueError(f"{label}: every metrics row must record the command that produced it")
        entries.append(entry)
    return entries


def load_catalogue(path: str | os.PathLike[str] | None = None) -> dict[str, CatalogueEntry]:
    path = Path(path) if path else catalogue_path()
    with path.open(encoding="utf-8") as f:
        data = yaml.safe_load(f)
    return {e.name: e for e in validate_catalogue(data, str(path))}


def list_models(pattern: str = "*", *, available_only: bool = False) -> list[str]:
    """Names of catalogue models matching a glob ``pattern`` (like ``timm.list_models``)."""
    entries = load_catalogue().values()
    return sorted(e.name for e in entries if fnmatch.fnmatch(e.name, pattern) and (e.loadable or not available_only))
