"""Train the toy text-to-image UNet (and its text encoder) and ship the whole pipeline to data/toy_sd.

    python scripts/train_toy_sd.py --minutes 90 --vae runs/toy_vae --clip runs/toy_clip_stage1 --seed 0

Needs the toy VAE (scripts/train_toy_vae.py) and a toy CLIP (scripts/train_toy_clip.py), whose text tower is the
starting point of the pipeline's text encoder. By default the text encoder trains with the UNet (at a fraction of
its learning rate): the contrastive loss leaves the words for shape, pose and position nearly collapsed in the
CLIP text tower, and a frozen copy of it keeps the UNet from learning them. --init continues a saved pipeline
(with its own text encoder and tokenizer, unless --fresh-text-encoder or --clip-text-encoder).

The shipped pipeline's last stage went the other way: once the toy CLIP kept those words apart (group batches),
its text tower, frozen, replaced the jointly trained text encoder, in which the denoising loss alone had let the
position and pose words drift together (--init ... --clip-text-encoder --frozen-text-encoder; see
scripts/build_toyworld.sh).
Saves the pipeline every 15 minutes, so an interrupted run still leaves a loadable folder.
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
    parser.add_argument("--init", default=None, help="continue training the UNet and text encoder of this pipeline")
    parser.add_argument("--n-images", type=int, default=60000, help="rendered training images")
    parser.add_argument("--frozen-text-encoder", action="store_true", help="train the UNet only")
    parser.add_argument("--fresh-text-encoder", action="store_true", help="text encoder from random weights")
    parser.add_argument(
        "--clip-text-encoder",
        action="store_true",
        help="with --init: replace the pipeline's text encoder by the toy CLIP's text tower and tokenizer",
    )
    parser.add_argument("--text-encoder-lr-scale", type=float, default=0.3, help="text encoder lr / UNet lr")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default=None, help="default: data/toy_sd")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    torch.set_num_threads(args.threads)
    cfg = ToyDiffusionTrainConfig(
        steps=args.steps,
        max_minutes=args.minutes,
        batch_size=args.batch_size,
        n_images=args.n_images,
        init_from=args.init,
        train_text_encoder=not args.frozen_text_encoder,
        fresh_text_encoder=args.fresh_text_encoder,
        clip_text_encoder=args.clip_text_encoder,
        text_encoder_lr_scale=args.text_encoder_lr_scale,
        seed=args.seed,
    )
    train_toy_diffusion(
        args.out or data_dir() / "toy_sd", cfg, args.vae, args.clip or data_dir() / "toy_clip", progress=False
    )


if __name__ == "__main__":
    main()
