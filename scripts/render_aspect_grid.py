"""Render the reference grid of the toy world's aspects shown in the README (docs/results/toyworld_aspects.png).

    python scripts/render_aspect_grid.py --out docs/results/toyworld_aspects.png

One row per aspect: each categorical value, or six levels from 0 to 1 of a graded aspect, on a fixed base image.
"""

import argparse

import numpy as np
from PIL import Image

from finexl.toyworld.aspects import CATEGORICAL, GRADED, Aspects
from finexl.toyworld.render import render


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="docs/results/toyworld_aspects.png")
    parser.add_argument("--scale", type=int, default=3)
    args = parser.parse_args()
    base = Aspects(shape="heart", colour="blue", size=0.6, saturation=0.8, background="beige")
    blank = np.full((32, 32, 3), 255, np.uint8)
    rows = []
    for aspect in CATEGORICAL:
        row = [render(base.replace(**{aspect.name: v}), seed=1) for v in aspect.values]
        rows.append(row + [blank] * (6 - len(row)))
    for aspect in GRADED:
        rows.append([render(base.replace(**{aspect.name: float(x)}), seed=1) for x in np.linspace(0, 1, 6)])
    grid = np.concatenate([np.concatenate(r, axis=1) for r in rows], axis=0)
    image = Image.fromarray(grid)
    image.resize((grid.shape[1] * args.scale, grid.shape[0] * args.scale), Image.NEAREST).save(args.out)


if __name__ == "__main__":
    main()
