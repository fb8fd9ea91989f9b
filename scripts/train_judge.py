"""Train the judge (supervised aspect reader, independent of the toy CLIP) and ship it to data/toy_judge.

    python scripts/train_judge.py --minutes 15 --vae runs/toy_vae --seed 0

--vae: the toy VAE folder whose round trip the judge learns to read through (default: data/toy_sd/vae).
"""

import argparse
import logging

import torch

from finexl.toyworld.judge import JudgeTrainConfig, train_judge
from finexl.utils import data_dir


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=15.0, help="wall-clock budget")
    parser.add_argument("--steps", type=int, default=20000)
    parser.add_argument("--vae", default=None)
    parser.add_argument("--init", default=None, help="continue training this judge folder")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default=None, help="default: data/toy_judge")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    torch.set_num_threads(args.threads)
    cfg = JudgeTrainConfig(steps=args.steps, max_minutes=args.minutes, init_from=args.init, seed=args.seed)
    train_judge(args.out or data_dir() / "toy_judge", cfg, args.vae or data_dir() / "toy_sd" / "vae", progress=False)


if __name__ == "__main__":
    main()
