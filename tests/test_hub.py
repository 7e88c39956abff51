"""Hub paths, all offline: catalogue, local folders, single files, a fake Hub cache, sha256, strictness, pickles."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

import webiml
from webiml.hub import CheckpointError, from_pretrained, load_catalogue, sha256_of, validate_catalogue
from webiml.models import SmpIML

TINY = {"arch": "FPN", "encoder": "tu-tf_efficientnet_lite0", "image_head": True}


@pytest.fixture(scope="module")
def tiny_model() -> SmpIML:
    torch.manual_seed(0)
    return SmpIML(**TINY).eval()


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory, tiny_model: SmpIML) -> Path:
    out = tmp_path_factory.mktemp("saved") / "tiny"
    tiny_model.save_pretrained(out, model_name="tiny test model", training_data="nothing")
    return out


def _same_outputs(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        return torch.allclose(a(x).mask_logits, b(x).mask_logits, atol=1e-6)


def test_save_pretrained_layout_and_card(saved: Path) -> None:
    assert sorted(p.name for p in saved.iterdir()) == ["README.md", "config.json", "model.safetensors"]
    cfg = json.loads((saved / "config.json").read_text())
    assert cfg["architecture"] == "SmpIML" and cfg["arch"] == "FPN" and cfg["encoder_weights"] is None
    card = (saved / "README.md").read_text()
    assert "tiny test model" in card and "Intended use" in card and "Limitations" in card
    assert not list(saved.glob(".*tmp"))  # no temporary files left behind


def test_local_folder_and_single_file(saved: Path, tiny_model: SmpIML, tmp_path: Path) -> None:
    m = from_pretrained(saved)
    assert isinstance(m, SmpIML) and not m.training and _same_outputs(m, tiny_model)
    single = tmp_path / "alone.safetensors"
    shutil.copy(saved / "model.safetensors", single)  # config travels in the file's metadata
    assert _same_outputs(from_pretrained(single), tiny_model)
    assert _same_outputs(SmpIML.from_pretrained(str(saved)), tiny_model)  # hub-mixin classmethod


def test_pickles_are_refused(tmp_path: Path) -> None:
    for name in ("model.pth", "last.ckpt", "pytorch_model.bin"):
        p = tmp_path / name
        torch.save({"a": torch.zeros(1)}, p)
        with pytest.raises(CheckpointError, match="never unpickles"):
            from_pretrained(p)


def test_strict_missing_and_extra_keys(saved: Path, tmp_path: Path) -> None:
    from safetensors.torch import load_file, save_file

    state = load_file(saved / "model.safetensors")
    meta = {"webiml_architecture": "SmpIML", "webiml_config": json.dumps(TINY)}
    dropped = dict(state)
    dropped.pop(next(iter(dropped)))
    save_file(dropped, tmp_path / "missing.safetensors", metadata=meta)
    with pytest.raises(CheckpointError, match="1 missing keys"):
        from_pretrained(tmp_path / "missing.safetensors")
    extra = {**state, "bogus.weight": torch.zeros(2)}
    save_file(extra, tmp_path / "extra.safetensors", metadata=meta)
    with pytest.raises(CheckpointError, match="1 unexpected keys"):
        from_pretrained(tmp_path / "extra.safetensors")
    m = from_pretrained(tmp_path / "extra.safetensors", strict=False)
    assert isinstance(m, SmpIML)


def test_unknown_name_is_clear() -> None:
    with pytest.raises(CheckpointError, match="not a file, a folder, a catalogue name"):
        from_pretrained("no-such-model-anywhere")


def _fake_hub_cache(cache: Path, repo_id: str, folder: Path, revision: str) -> None:
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    snap = repo / "snapshots" / revision
    snap.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(revision)
    for f in ("config.json", "model.safetensors"):
        shutil.copy(folder / f, snap / f)


def test_fake_hub_cache_offline_subprocess(saved: Path, tmp_path: Path) -> None:
    """A Hub repo id resolves from the huggingface_hub cache with HF_HUB_OFFLINE=1, as for a real user."""
    rev = "0123456789abcdef0123456789abcdef01234567"
    _fake_hub_cache(tmp_path / "hf" / "hub", "someorg/tiny-iml", saved, rev)
    code = (
        "import webiml, torch\n"
        "m = webiml.from_pretrained('someorg/tiny-iml')\n"
        f"m2 = webiml.from_pretrained('someorg/tiny-iml', revision='{rev}')\n"
        "print(type(m).__name__, sum(p.numel() for p in m.parameters()) == sum(p.numel() for p in m2.parameters()))\n"
        "try:\n    webiml.from_pretrained('someorg/absent')\nexcept Exception as e:\n    print(type(e).__name__, 'HF_HUB_OFFLINE=1' in str(e))\n"
    )
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["SmpIML", "True", "CheckpointError", "True"]


def _catalogue_with(tmp_path: Path, weights: Path, sha: str) -> Path:
    data = {"models": [{
        "name": "tiny-local", "status": "available", "architecture": "SmpIML", "config": TINY,
        "weights": {"embedded": str(weights)}, "sha256": sha, "license": "apache-2.0",
        "training": {"data": "none"}, "metrics": [{"dataset": "x", "pixel_f1": 0.1, "command": "pytest"}],
    }]}
    path = tmp_path / "catalogue.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_catalogue_sha256_verified(saved: Path, tmp_path: Path, tiny_model: SmpIML) -> None:
    weights = saved / "model.safetensors"
    good = _catalogue_with(tmp_path, weights.resolve(), sha256_of(weights))
    assert _same_outputs(from_pretrained("tiny-local", catalogue=good), tiny_model)
    bad = _catalogue_with(tmp_path, weights.resolve(), "0" * 64)
    with pytest.raises(CheckpointError, match="sha256 mismatch"):
        from_pretrained("tiny-local", catalogue=bad)


def test_shipped_catalogue_schema() -> None:
    entries = load_catalogue()
    assert entries, "the catalogue is empty"
    statuses = {e.status for e in entries.values()}
    assert {"needs-conversion", "unreleased-upstream"} <= statuses
    for e in entries.values():
        if e.loadable and e.weights.get("embedded"):
            from webiml.hub import _embedded_path

            path = _embedded_path(e.weights["embedded"])
            assert path.is_file(), f"{e.name}: embedded weights missing at {path}"
            assert sha256_of(path) == e.sha256, f"{e.name}: sha256 in checkpoints.yaml is stale"
    root_link = Path(__file__).resolve().parents[1] / "checkpoints.yaml"
    assert root_link.resolve() == Path(webiml.hub.catalogue_path()).resolve()


@pytest.mark.parametrize(
    "bad, msg",
    [
        ({"models": [{"name": "x"}]}, "missing"),
        ({"models": [{"name": "x", "status": "weird", "architecture": "SmpIML", "config": {}, "license": "", "training": {}}]}, "status"),
        ({"models": [{"name": "x", "status": "available", "architecture": "SmpIML", "config": {}, "license": "", "training": {}}]}, "needs weights"),
        ({"models": [{"name": "x", "status": "available", "architecture": "SmpIML", "config": {}, "license": "", "training": {},
                      "weights": {"hub": {"repo_id": "a/b"}}, "sha256": "0" * 64}]}, "pinned revision"),
        ({"models": [{"name": "x", "status": "needs-conversion", "architecture": "A", "config": {}, "license": "", "training": {}, "typo": 1}]}, "unknown keys"),
    ],
)
def test_catalogue_schema_errors(bad: dict, msg: str) -> None:
    with pytest.raises(ValueError, match=msg):
        validate_catalogue(bad)


def test_list_and_create_models() -> None:
    names = webiml.list_models()
    assert "apsc-net-convnext-b-miml" in names
    assert all("web-iml" in n for n in webiml.list_models("web-iml*"))
    with pytest.raises(CheckpointError, match="needs-conversion"):
        webiml.from_pretrained("apsc-net-convnext-b-miml")
    with pytest.raises(KeyError, match="unknown model"):
        webiml.create_model("nope")


def test_catalogue_listing_does_not_import_torch() -> None:
    """`webiml zoo list` must stay instant: the catalogue module reads YAML only."""
    code = ("import sys, webiml.catalogue as c; names = c.list_models(); assert names; "
            "heavy = [m for m in ('torch', 'timm', 'lightning') if m in sys.modules]; assert not heavy, heavy")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_hub_validation_checks_architectures() -> None:
    entry = {"name": "x", "status": "available", "architecture": "NoSuchNet", "config": {}, "license": "", "training": {},
             "weights": {"embedded": "x.safetensors"}, "sha256": "0" * 64}
    with pytest.raises(ValueError, match="unknown architecture"):
        validate_catalogue({"models": [entry]})
