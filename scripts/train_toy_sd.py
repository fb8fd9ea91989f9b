"""Train the toy text-to-image UNet from scratch and ship the whole pipeline to data/toy_sd.

    python scripts/train_toy_sd.py --minutes 90 --vae runs/toy_vae --clip data/toy_clip --seed 0

Needs the toy VAE (scripts/train_toy_vae.py) and the toy CLIP (scripts/train_toy_clip.py), whose text tower
becomes the pipeline's frozen text encoder. Saves the pipeline every 15 minutes, so an interrupted run still
leaves a loadable folder.
"""

import argparse
import logging

import torch

from finexl.toyworld.diffusion import ToyDiffusionTrainConfig, train_toy_diffusion
from finexl.utils import data_dir


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=90.0, help="wall-clock budget")
    parser.add_argument("--steps", type=int, default=100000)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--vae", required=True, help="toy VAE folder")
    parser.add_argument("--clip", default=None, help="toy CLIP folder (default: data/toy_clip)")
    parser.add_argument("--init", default=None, help="continue training the UNet of this pipeline folder")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default=None, help="default: data/toy_sd")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    torch.set_num_threads(args.threads)
    cfg = ToyDiffusionTrainConfig(
        steps=args.steps, max_minutes=args.minutes, batch_size=args.batch_size, init_from=args.init, seed=args.seed
    )
    train_toy_diffusion(
        args.out or data_dir() / "toy_sd", cfg, args.vae, args.clip or data_dir() / "toy_clip", progress=False
    )


if __name__ == "__main__":
    main()
