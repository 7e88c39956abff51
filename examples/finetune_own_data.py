"""Fine-tune a pretrained webiml model on your own image/mask pairs.

    python examples/finetune_own_data.py --images my/images --masks my/masks --out my-model \
        [--init iml-unet-lite0-online] [--epochs 5] [--freeze-encoder]

Masks pair with images by file stem (``a.jpg`` <-> ``a.png`` or ``a_mask.png``), never by sort order.
Masks are 8-bit, 255 = manipulated (invert yours first if they are the other way round). Images without
a mask are treated as authentic. A tenth of the pairs is held out for validation. The result is a
``from_pretrained`` folder (config.json + model.safetensors + model card).
"""

from __future__ import annotations

import argparse
import hashlib
from pathlib import Path

import lightning as L

from webiml.data.datamodule import IMLDataModule
from webiml.data.datasets import IMAGE_SUFFIXES
from webiml.data.manifest import ManifestRecord, write_manifest
from webiml.tasks.iml import IMLTask


def build_manifests(images: Path, masks: Path, out: Path) -> tuple[Path, Path]:
    """Pair images and masks by stem and write train/val manifests (split by a hash of the name)."""
    mask_by_stem = {}
    for m in masks.iterdir():
        stem = m.stem.removesuffix("_mask").removesuffix("_gt")
        mask_by_stem[stem] = m
    train, val = [], []
    for img in sorted(p for p in images.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES):
        mask = mask_by_stem.get(img.stem)
        record = ManifestRecord(str(img.resolve()), str(mask.resolve()) if mask else None, int(mask is not None), "mine")
        (val if int(hashlib.sha1(img.name.encode()).hexdigest(), 16) % 10 == 0 else train).append(record)
    if not train or not val:
        raise SystemExit(f"need at least 2 images in {images} (got {len(train)} train, {len(val)} val)")
    return write_manifest(out / "train.jsonl", train), write_manifest(out / "val.jsonl", val)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=Path, required=True)
    parser.add_argument("--masks", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--init", default="iml-unet-lite0-online", help="pretrained model to start from")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--crop", type=int, default=256)
    parser.add_argument("--freeze-encoder", action="store_true")
    args = parser.parse_args()

    train, val = build_manifests(args.images, args.masks, args.out / "manifests")
    data = IMLDataModule(train=str(train), val={"mine": str(val)}, crop_size=args.crop, batch_size=4, num_workers=2)
    task = IMLTask(init_weights=args.init, freeze_encoder=args.freeze_encoder, lr=2e-4, warmup_steps=0.05)
    trainer = L.Trainer(max_epochs=args.epochs, default_root_dir=str(args.out / "runs"), log_every_n_steps=5)
    trainer.fit(task, datamodule=data)
    task.net.save_pretrained(args.out / "model", model_name=f"{args.init} fine-tuned on {args.images}",
                             training_data=f"{args.init}, then {len(train.read_text().splitlines())} own images")
    print(f"fine-tuned model written to {args.out / 'model'}; load with webiml.from_pretrained('{args.out / 'model'}')")


if __name__ == "__main__":
    main()
