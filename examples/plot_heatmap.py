"""Plot a manipulation heatmap next to the photo, without notebooks (no pyplot window).

    python examples/plot_heatmap.py photo.jpg heatmap.png [--model NAME_OR_PATH]

Writes one PNG: the photo | the heatmap (dark purple = authentic, yellow = manipulated) | the overlay.
"""

from __future__ import annotations

import argparse

import numpy as np
from PIL import Image

import webiml
from webiml.inference import Localizer
from webiml.viz import colorize, overlay


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("image")
    parser.add_argument("output")
    parser.add_argument("--model", default="iml-unet-lite0-online")
    args = parser.parse_args()

    image = np.asarray(Image.open(args.image).convert("RGB"))
    result = Localizer(webiml.from_pretrained(args.model)).localize(image)
    panels = [image, colorize(result.mask_probs), overlay(image, result.mask_probs)]
    gap = np.full((image.shape[0], 8, 3), 255, np.uint8)
    strip = np.concatenate([panels[0], gap, panels[1], gap, panels[2]], axis=1)
    Image.fromarray(strip).save(args.output)
    print(f"image score {result.image_score:.3f}; wrote {args.output}")


if __name__ == "__main__":
    main()
