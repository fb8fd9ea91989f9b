"""Train the toy VAE (32x32x3 <-> 16x16x4) from scratch (it ships as data/toy_sd/vae).

python scripts/train_toy_vae.py --minutes 10 --seed 0
"""

import argparse
import logging

import torch

from finexl.toyworld.diffusion import ToyVaeTrainConfig, train_toy_vae


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=10.0, help="wall-clock budget")
    parser.add_argument("--steps", type=int, default=4000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default="runs/toy_vae", help="an intermediate: it ships inside data/toy_sd/vae")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    torch.set_num_threads(args.threads)
    cfg = ToyVaeTrainConfig(steps=args.steps, max_minutes=args.minutes, seed=args.seed)
    train_toy_vae(args.out, cfg, progress=False)


if __name__ == "__main__":
    main()
