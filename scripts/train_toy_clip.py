"""Train the toy CLIP and ship it to data/toy_clip (with its tokenizer).

The shipped model was made in four runs, listed with their budgets in scripts/build_toyworld.sh: from scratch on
minimal pairs (two images that differ in one aspect, multi-positive targets from the exact labels) with half the
batches "hard" (shared colour, background and pattern), then continued with hard batches that share colour,
background and in turn one more aspect, then continued twice with group batches (--group-batches: groups of one
image in every pose, or in every shape, all else equal), which is what taught it pose and shape. --plain trains with
plain InfoNCE on random images (the first UNet stage's text tower). Without --init the offline tokenizer is built
afresh (the same token strings and ids every time); with it, the tokenizer of that folder is kept.
"""

import argparse
import logging
import tempfile

import torch

from finexl.toyworld.clip import ToyClipTrainConfig, train_toy_clip
from finexl.toyworld.tokenizer import build_tokenizer
from finexl.utils import data_dir


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=25.0, help="wall-clock budget")
    parser.add_argument("--steps", type=int, default=4000)
    parser.add_argument("--plain", action="store_true", help="plain InfoNCE on random images, no minimal pairs")
    parser.add_argument("--hard-batches", type=float, default=0.5, help="fraction of hard batches (shared colour)")
    parser.add_argument("--group-batches", type=float, default=0.0, help="fraction of pose / shape group batches")
    parser.add_argument("--lr", type=float, default=5e-4)
    parser.add_argument("--init", default=None, help="continue training this toy CLIP folder")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default=None, help="default: data/toy_clip")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    torch.set_num_threads(args.threads)
    cfg = ToyClipTrainConfig(
        steps=args.steps,
        max_minutes=args.minutes,
        minimal_pairs=not args.plain,
        hard_batch_fraction=0.0 if args.plain else args.hard_batches,
        group_batch_fraction=0.0 if args.plain else args.group_batches,
        lr=args.lr,
        init_from=args.init,
        seed=args.seed,
    )
    out = args.out or data_dir() / "toy_clip"
    if args.init:
        train_toy_clip(out, cfg, args.init, progress=False)
        return
    with tempfile.TemporaryDirectory() as tok_dir:
        build_tokenizer(tok_dir, seed=args.seed)
        train_toy_clip(out, cfg, tok_dir, progress=False)


if __name__ == "__main__":
    main()
