"""Third-party inference with webiml: load a pretrained model and localize manipulations in your photos.

    python examples/inference_from_pretrained.py photo.jpg [more.jpg ...] [--model NAME_OR_PATH]

``--model`` takes a zoo name (``webiml zoo list``), a Hub id (``org/name``), a folder written by
``save_pretrained`` / ``webiml export``, or a ``.safetensors`` file. Only torch + webiml are needed.
"""

from __future__ import annotations

import argparse

import numpy as np
from PIL import Image

import webiml
from webiml.inference import Localizer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("images", nargs="+")
    parser.add_argument("--model", default="iml-unet-lite0-online")
    parser.add_argument("--threshold", type=float, default=0.5)
    args = parser.parse_args()

    model = webiml.from_pretrained(args.model)  # safetensors only, strict, eval mode
    localizer = Localizer(model)  # any image size: tiles large images, returns maps at the original size
    for path in args.images:
        image = np.asarray(Image.open(path).convert("RGB"))
        result = localizer.localize(image)
        area = result.binary_mask(args.threshold).mean()
        verdict = "manipulated" if result.image_score >= args.threshold else "authentic"
        print(f"{path}: {verdict} (score {result.image_score:.3f}), {100 * area:.1f}% of pixels flagged")
        # The raw model is a plain nn.Module too: model.predict(image) (numpy H, W, 3 or a (B, 3, H, W) tensor)
        # -> IMLOutput(mask_logits, image_logits) at the input size


if __name__ == "__main__":
    main()
