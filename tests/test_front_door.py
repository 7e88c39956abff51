"""The `webiml` front door: help and version without torch / Lightning, "did you mean", and every user mistake
as one `error:` line with exit status 2 (usage) or 1 (runtime); the traceback only under --debug."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import lightning  # noqa: F401  (imported here: Lightning binds its log handler to the stderr of its import)
import pytest
import yaml

from test_cli import _config
from webiml.cli import EXTRA_VERBS, LIGHTNING_VERBS, _load_verbs, main

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
ENV.pop("WEBIML_DEBUG", None)


def _run_fresh(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code], env=ENV, capture_output=True, text=True, timeout=120)


def test_help_lists_every_verb_without_torch_or_lightning() -> None:
    proc = _run_fresh(
        "import sys\nfrom webiml.cli import main\nrc = main(['--help'])\n"
        "heavy = sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'lightning', 'numpy', 'jsonargparse'})\n"
        "print('RC', rc, 'HEAVY', heavy)")
    assert proc.returncode == 0, proc.stderr
    assert "RC 0 HEAVY []" in proc.stdout
    _load_verbs()
    for verb in [*LIGHTNING_VERBS, *EXTRA_VERBS]:
        lines = [line for line in proc.stdout.splitlines() if line.split()[:1] == [verb]]
        assert len(lines) == 1, verb  # one line per verb


def test_version_and_no_arguments(capsys: pytest.CaptureFixture[str]) -> None:
    from webiml import __version__

    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"webiml {__version__}"
    assert main([]) == 0
    assert "usage: webiml" in capsys.readouterr().out


def test_mistyped_verb_did_you_mean(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["localise", "x.jpg"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["webiml: error: unknown verb 'localise'; did you mean 'localize'? (see `webiml --help`)"]
    assert main(["frobnicate"]) == 2
    assert "did you mean" not in capsys.readouterr().err


def _one_error_line(capsys: pytest.CaptureFixture[str]) -> str:
    captured = capsys.readouterr()
    lines = [line for line in (captured.out + captured.err).splitlines() if "error" in line.lower()]
    assert len(lines) == 1, captured
    assert "Traceback" not in captured.out + captured.err
    return lines[0]


def test_localize_mistakes_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["localize", str(tmp_path / "missing.png")]) == 2
    assert "missing.png" in _one_error_line(capsys)
    assert not (tmp_path / "localize-out").exists()  # the failed run left no empty output folder
    (tmp_path / "a.png").write_bytes(b"not a png")
    assert main(["localize", str(tmp_path / "a.png"), "-m", "iml-unet-lite0-synth"]) == 2
    assert "iml-unet-lite0-synthetic" in _one_error_line(capsys)  # the close catalogue name is suggested
    assert main(["localize", str(tmp_path / "a.png"), "-o", str(tmp_path / "out"), "--workers", "0"]) == 1
    assert "a.png" in capsys.readouterr().out  # the file that is not an image is named
    with pytest.raises(SystemExit) as e:
        main(["localize", str(tmp_path / "a.png"), "--tile", "big"])
    assert e.value.code == 2
    assert "invalid int value: 'big'" in capsys.readouterr().err


def test_export_missing_checkpoint(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["export", str(tmp_path / "nope.ckpt"), str(tmp_path / "out")]) == 2
    assert "nope.ckpt" in _one_error_line(capsys)


def test_debug_shows_the_traceback(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValueError, match="nope.ckpt"):
        main(["export", str(tmp_path / "nope.ckpt"), str(tmp_path / "out"), "--debug"])
    monkeypatch.setenv("WEBIML_DEBUG", "1")
    with pytest.raises(ValueError, match="nope.ckpt"):
        main(["export", str(tmp_path / "nope.ckpt"), str(tmp_path / "out")])


def test_fit_config_mistakes_are_one_line(tmp_path: Path, tiny_dataset: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: [unclosed\n")
    assert main(["fit", "--config", str(bad)]) == 2
    assert "Problems parsing config" in _one_error_line(capsys)
    assert main(["fit", "--config", str(tmp_path / "none.yaml")]) == 2
    assert "none.yaml" in _one_error_line(capsys)
    cfg = _config(tmp_path, tiny_dataset)
    assert main(["fit", "--config", str(cfg), "--model.init_args.lr", "abc"]) == 2
    assert _one_error_line(capsys) == "webiml: error: --model.lr: Expected a <class 'float'>. Got value: abc"


def test_fit_malformed_manifest_is_one_line(tmp_path: Path, tiny_dataset: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = _config(tmp_path, tiny_dataset)
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"image": "a.png", "mask": \n')
    data = yaml.safe_load(cfg.read_text())
    data["data"]["init_args"]["train"] = str(broken)
    cfg.write_text(yaml.safe_dump(data))
    status = main(["fit", "--config", str(cfg)])
    assert status in (1, 2)
    assert "broken.jsonl" in _one_error_line(capsys)


def test_library_tips_are_quiet(tmp_path: Path, tiny_dataset: Path, caplog: pytest.LogCaptureFixture,
                                capsys: pytest.CaptureFixture[str]) -> None:
    cfg = _config(tmp_path, tiny_dataset)
    with caplog.at_level(logging.INFO):
        assert main(["fit", "--config", str(cfg), "--trainer.fast_dev_run", "true"]) == 0
    captured = capsys.readouterr()
    text = caplog.text + captured.out + captured.err
    assert "litlogger" not in text and "tensorboardX" not in text and "many workers" not in text


def test_a_malicious_checkpoint_is_one_line_without_unsafe_advice(tmp_path, capsys) -> None:
    import os
    import pickle

    from webiml.cli import error_line, user_error_status

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {tmp_path / 'pwned'}",))

    path = tmp_path / "evil.ckpt"
    path.write_bytes(pickle.dumps({"state_dict": Evil()}))
    import torch

    try:
        torch.load(path, weights_only=True)
    except Exception as err:  # what Lightning's --ckpt_path raises
        assert user_error_status(err) == 1
        line = error_line(err)
        assert "never unpickles" in line and "weights_only=False" not in line and "\n" not in line
    else:
        raise AssertionError("torch loaded a pickled object with weights_only=True")
    assert not (tmp_path / "pwned").exists()


def test_a_closed_pipe_ends_quietly() -> None:
    """`webiml zoo list | head -0`: the reader is gone before webiml writes; no 'Broken pipe' error line, and the
    exit status other tools give (141)."""
    proc = subprocess.Popen([sys.executable, "-m", "webiml", "zoo", "list"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()  # closed at once: webiml needs a second to start, so its first write meets a closed pipe
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=60) == 141 and err == ""
