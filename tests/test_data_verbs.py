"""`webiml data sources|index|stats|verify`, in-process."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from data_builders import build_casia2, build_columbia, build_miml
from webiml.cli import main
from webiml.data.manifest import read_manifest

REPO = Path(__file__).resolve().parents[1]


def test_sources_list_and_layout(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["data", "sources"]) == 0
    out = capsys.readouterr().out
    for name in ("casia1", "casia2", "columbia", "coverage", "nist16", "imd2020", "dso1", "korus", "in-the-wild",
                 "cocoglide", "tampcoco", "compraise", "fantasticreality", "defacto", "miml", "mimlv2", "folder", "benco"):
        assert f"\n{name} " in out, name
    assert main(["data", "sources", "columbia"]) == 0
    out = capsys.readouterr().out
    assert "4cam_splc" in out and "edgemask" in out and "authentic" in out
    assert main(["data", "sources", "nope"]) == 2


def test_index_stats_verify(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    exp = build_casia2(tmp_path / "d")
    out = tmp_path / "manifests" / "casia2.jsonl"
    assert main(["data", "index", "casia2", str(exp.root), "-o", str(out), "--sha256", "--workers", "2"]) == 0
    text = capsys.readouterr().out
    assert "indexed 5 of 7 samples" in text and "3 authentic" not in text
    assert "missing_mask" in text and "Tp_D_NRN_S_N_ani10171_ani10167_12434.jpg" in text
    assert "size_mismatch" in text and "(fixed)" in text and "files/s" in text

    assert main(["data", "stats", str(out)]) == 0
    text = capsys.readouterr().out
    assert "casia2" in text and "manipulated" in text and "long side" in text and "area" in text
    row = next(line for line in text.splitlines() if line.startswith("casia2"))
    assert row.split()[1:4] == ["3", "2", "5"]

    assert main(["data", "verify", str(out)]) == 0
    assert "0 changed, 0 missing" in capsys.readouterr().out
    records = read_manifest(out)
    victim = next(r for r in records if r.label == 0)
    Path(victim.image).write_bytes(Path(victim.image).read_bytes() + b"x")
    gone = next(r for r in records if r.label == 1)
    Path(gone.mask).unlink()
    assert main(["data", "verify", str(out)]) == 1
    text = capsys.readouterr().out
    assert f"changed  {victim.image}" in text and f"missing  {gone.mask}" in text


def test_index_policy_fail_and_usage_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    exp = build_casia2(tmp_path / "d")
    out = tmp_path / "m.jsonl"
    assert main(["data", "index", "casia2", str(exp.root), "-o", str(out), "--policy", "fail"]) == 1
    assert "problem(s) found" in capsys.readouterr().err and not out.exists()
    assert main(["data", "index", "nope", str(exp.root), "-o", str(out)]) == 2
    assert main(["data", "index", "casia2", str(tmp_path / "absent"), "-o", str(out)]) == 2
    assert main(["data", "index", "casia2", str(exp.root), "-o", str(out), "--opt", "bad"]) == 2
    assert "KEY=VALUE" in capsys.readouterr().err


def test_index_options_and_converted_masks(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    exp = build_miml(tmp_path / "d")
    out = tmp_path / "miml.jsonl"
    assert main(["data", "index", "miml", str(exp.root), "-o", str(out), "--opt", "parts=2", "--check", "header"]) == 0
    records = read_manifest(out)
    assert {r.source for r in records} == {"miml-part2"} and all(tuple(r.band) == (7, 193) for r in records)
    col = build_columbia(tmp_path / "c")
    out = tmp_path / "col.jsonl"
    assert main(["data", "index", "columbia", str(col.root), "-o", str(out), "--cache", str(tmp_path / "cache")]) == 0
    masks = [r.mask for r in read_manifest(out) if r.mask]
    assert masks and all(Path(m).is_relative_to(tmp_path / "cache") and m.endswith(".png") for m in masks)
    assert "converted masks" in capsys.readouterr().out


def test_stats_without_recorded_sizes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    exp = build_casia2(tmp_path / "d")
    out = tmp_path / "m.jsonl"
    assert main(["data", "index", "casia2", str(exp.root), "-o", str(out), "--check", "none"]) == 0
    capsys.readouterr()
    assert main(["data", "stats", str(out)]) == 0
    text = capsys.readouterr().out
    assert "image sizes" in text and "manipulated area of" in text


def test_protocol_configs_parse() -> None:
    """Every protocol config is a LightningCLI config naming IMLDataModule and manifests under
    data/manifests/, with the build commands documented in its comments (the results table callback is
    one of the CLI's defaults, see test_cli)."""
    configs = sorted((REPO / "configs" / "protocols").glob("*.yaml"))
    assert {p.stem for p in configs} >= {"mvss", "mvss_with_miml", "cat", "miml", "miml_without_miml", "robustness"}
    for path in configs:
        text = path.read_text()
        cfg = yaml.safe_load(text)
        data = cfg["data"]
        assert data["class_path"] == "webiml.data.datamodule.IMLDataModule", path.name
        args = data["init_args"]
        assert args["eval_policy"] in ("fixed", "native", "miml_official"), path.name
        paths = [args.get("train")] if isinstance(args.get("train"), str) else list(args.get("train") or [])
        paths += list(args["test"].values())
        assert all(p.startswith("data/manifests/") for p in paths), path.name
        assert "webiml data index" in text, path.name
    from webiml.data.datamodule import IMLDataModule

    cat = yaml.safe_load((REPO / "configs" / "protocols" / "cat.yaml").read_text())["data"]["init_args"]
    assert cat["samples_per_source"] > 0
    miml = yaml.safe_load((REPO / "configs" / "protocols" / "miml.yaml").read_text())["data"]["init_args"]
    assert {"miml-part1", "miml-part2", "casia2"} <= set(miml["repeat"]) and miml["eval_policy"] == "native"
    dm = IMLDataModule(**yaml.safe_load((REPO / "configs" / "protocols" / "robustness.yaml").read_text())["data"]["init_args"])
    assert "casia1@jpeg70" in dm.eval_names("test")
