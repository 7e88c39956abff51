"""Shared fixtures. Tests are offline: the Hugging Face Hub is never contacted."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

# Tiny test tensors gain nothing from intra-op threads, and on a shared 2-core machine several threads per
# process oversubscribe the cores (DataLoader workers, DDP subprocesses): one thread is faster and steadier.
torch.set_num_threads(1)

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The research-only data of ../shared/data; tests using it skip cleanly when it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip("../shared/data is not present")
    return SHARED_DATA


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny generated forgery dataset (train/val/test manifests of 64x64 images), built once per session."""
    from webiml.data.synthetic import PhotoPool, write_synthetic_dataset

    root = tmp_path_factory.mktemp("tiny-data")
    for split, n, seed in (("train", 16, 0), ("val", 8, 1), ("test", 8, 2)):
        write_synthetic_dataset(root / split, n, seed=seed, pool=PhotoPool.procedural(size=(64, 64), seed=seed),
                                size=(64, 64), p_authentic=0.25, source=f"tiny-{split}")
    return root


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A randomly initialised SmpIML (FPN) saved with save_pretrained, for the localize / report / demo tests."""
    from webiml.models import SmpIML

    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("model") / "fpn"
    SmpIML(arch="FPN").save_pretrained(out)
    return out
