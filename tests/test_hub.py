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


def test_saved_files_have_normal_permissions(tmp_path: Path, tiny_model: SmpIML) -> None:
    """Every saved file is readable like any other (0644 under umask 022): model.safetensors used to be 0600."""
    old = os.umask(0o022)
    try:
        tiny_model.save_pretrained(tmp_path / "m")
        webiml.save_pretrained(tiny_model, tmp_path / "half", dtype="float16")
    finally:
        os.umask(old)
    for folder in ("m", "half"):
        modes = {p.name: p.stat().st_mode & 0o777 for p in (tmp_path / folder).iterdir()}
        assert modes == {"config.json": 0o644, "model.safetensors": 0o644, "README.md": 0o644}, modes


def test_float16_save_and_resave_overwrites_card(tmp_path: Path, tiny_model: SmpIML) -> None:
    from safetensors import safe_open

    out = tmp_path / "m"
    tiny_model.save_pretrained(out, model_name="first")
    tiny_model.save_pretrained(out, dtype="float16", model_name="second")
    with safe_open(str(out / "model.safetensors"), framework="pt") as f:
        dtypes = {f.get_tensor(k).dtype for k in f.keys()}
        assert f.metadata()["webiml_architecture"] == "SmpIML"
    assert torch.float16 in dtypes and torch.float32 not in dtypes
    card = (out / "README.md").read_text()
    assert "# second" in card and "first" not in card  # a re-save writes a fresh card
    loaded = from_pretrained(out)
    assert next(loaded.parameters()).dtype == torch.float32


def test_class_from_pretrained_means_webiml_from_pretrained(saved: Path, tmp_path: Path) -> None:
    """`Cls.from_pretrained(x)` accepts what `webiml.from_pretrained` accepts (catalogue name, Hub id, folder,
    file) and checks that the architecture is `Cls` or a subclass."""
    from webiml.models import IMLModel, WebIML

    embedded = SmpIML.from_pretrained("iml-unet-lite0-synthetic")  # a catalogue name, not a Hub repo
    assert isinstance(embedded, SmpIML) and not embedded.training
    assert isinstance(IMLModel.from_pretrained(saved / "model.safetensors"), SmpIML)  # a single file
    assert isinstance(IMLModel.from_pretrained(saved), SmpIML)
    with pytest.raises(CheckpointError, match="is a SmpIML, not a WebIML"):
        WebIML.from_pretrained(saved)
    with pytest.raises(CheckpointError, match="is a SmpIML, not a WebIML"):
        WebIML.from_pretrained("iml-unet-lite0-synthetic")


def test_config_may_only_name_registered_architectures(saved: Path, tmp_path: Path) -> None:
    for arch in ("os.system", "web_iml_tiny", "IMLModel", "webiml.models.registry.create_model"):
        folder = tmp_path / arch.replace(".", "_")
        shutil.copytree(saved, folder)
        (folder / "config.json").write_text(json.dumps({"architecture": arch}))
        with pytest.raises(CheckpointError, match="unknown architecture"):
            from_pretrained(folder)


def test_model_card_from_catalogue_entry(tmp_path: Path) -> None:
    """The card of a catalogue model states the weights' real licence (never apache-2.0 for non-commercial
    weights), the training data, the metrics as model-index and the intended use."""
    from huggingface_hub import ModelCard

    entry = load_catalogue()["iml-unet-lite0-synthetic"]
    model = from_pretrained(entry.name)
    model.save_pretrained(tmp_path / "m", catalogue_entry=entry.name)
    card = ModelCard.load(tmp_path / "m" / "README.md")
    data = card.data.to_dict()
    assert data["license"] == "other" and data["license_name"] == "non-commercial-research"
    assert data["library_name"] == "webiml" and "image-manipulation-localization" in data["tags"]
    results = data["model-index"][0]["results"]
    f1 = [m["value"] for r in results for m in r["metrics"] if m["type"] == "pixel_f1"]
    assert [m["pixel_f1"] for m in entry.metrics] == f1
    assert entry.training["data"][:60] in card.text and "## Intended use" in card.text
    assert "Non-commercial research use only" in card.text
    assert 'webiml.from_pretrained("iml-unet-lite0-synthetic")' in card.text
    plain = webiml.hub.build_model_card(model).data.to_dict()  # no entry, no licence given: not claimed
    assert plain["license"] == "other" and plain["license_name"] == "unspecified"


def test_zoo_licence_column_is_the_weights_licence() -> None:
    from webiml.catalogue import hub_license

    entries = load_catalogue()
    assert entries["iml-unet-lite0-synthetic"].license_short == "non-commercial-research"
    assert entries["apsc-net-convnext-b-miml"].license_short == "cc-by-nc-4.0"
    assert hub_license("Apache-2.0") == ("apache-2.0", None)
    assert hub_license("Apache-2.0 code; weights for non-commercial use") == ("other", "non-commercial-research")
    assert entries["adaptive-cfa"].license_short == "no-licence-granted"


def test_zoo_list_shows_where_the_weights_are(capsys: pytest.CaptureFixture[str]) -> None:
    from webiml.cli import main

    assert main(["zoo", "list"]) == 0
    rows = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()[2:]}
    assert "embedded" in rows["iml-unet-lite0-online"]
    for name in ("trufor", "cat-net-v2", "iml-vit-casiav2", "mesorch", "apsc-net-convnext-b-miml"):
        assert "needs-conversion" in rows[name] and "upstream; webiml convert" in rows[name]


def test_push_to_hub_uploads_the_saved_folder(monkeypatch: pytest.MonkeyPatch, tiny_model: SmpIML) -> None:
    """push_to_hub is huggingface_hub's: it saves through webiml's hooks into a temporary folder and uploads it."""
    import huggingface_hub.hub_mixin as hub_mixin

    uploaded: dict[str, object] = {}

    class FakeApi:
        def __init__(self, token: object = None) -> None:
            pass

        def create_repo(self, repo_id: str, **kwargs: object) -> object:
            return type("Repo", (), {"repo_id": repo_id})()

        def upload_folder(self, *, repo_id: str, folder_path: Path, **kwargs: object) -> str:
            folder = Path(folder_path)
            uploaded.update(repo=repo_id, files=sorted(p.name for p in folder.iterdir()),
                            card=(folder / "README.md").read_text())
            return "commit-url"

    monkeypatch.setattr(hub_mixin, "HfApi", FakeApi)
    assert tiny_model.push_to_hub("me/tiny", model_card_kwargs={"model_name": "pushed tiny"}) == "commit-url"
    assert uploaded["repo"] == "me/tiny"
    assert uploaded["files"] == ["README.md", "config.json", "model.safetensors"]
    assert "# pushed tiny" in str(uploaded["card"])


def test_registry_names_and_pretrained_filter() -> None:
    from webiml.models import WebIML

    assert {"SmpIML", "WebIML", "APSCNet", "web_iml_tiny", "apsc_net_base", "iml-unet-lite0-synthetic"} <= set(webiml.list_models())
    loadable = webiml.list_models(pretrained=True)
    assert loadable == sorted(n for n, e in load_catalogue().items() if e.loadable) and "iml-unet-lite0-synthetic" in loadable
    assert webiml.list_models("web_iml_*") == ["web_iml_base", "web_iml_small", "web_iml_tiny"]
    assert isinstance(webiml.create_model("web_iml_tiny", channels=16), WebIML)
    m = webiml.create_model("SmpIML", arch="FPN", encoder="tu-tf_efficientnet_lite0")
    assert isinstance(m, SmpIML) and m.config["arch"] == "FPN"
    c = webiml.create_model("iml-unet-lite0-synthetic")  # catalogue name: its architecture + config, random weights
    assert isinstance(c, SmpIML) and c.config["arch"] == "Unet"
    with pytest.raises(KeyError, match="no pretrained weights"):
        webiml.create_model("web_iml_tiny", pretrained=True)
    with pytest.raises(ValueError, match="already registered"):
        webiml.models.register_model(type("SmpIML", (), {}))
