"""``finexl train lora`` and ``finexl train dreambooth``."""

from __future__ import annotations

import argparse

from finexl.cli.common import (
    add_compute_arguments,
    nonnegative_int,
    parse_steps,
    positive_float,
    positive_int,
    set_threads,
)
from finexl.errors import ConfigError


def _settings(args: argparse.Namespace) -> dict:
    """TrainConfig fields from the arguments; an option left out keeps TrainConfig's default."""
    snapshots = parse_steps(args.snapshots, "--snapshots")
    settings = {
        "rank": args.rank, "alpha": args.alpha, "train_text_encoder": args.train_text_encoder, "lr": args.lr,
        "lr_scheduler": args.lr_scheduler, "lr_warmup_steps": args.lr_warmup_steps, "batch_size": args.batch_size,
        "gradient_accumulation_steps": args.gradient_accumulation_steps, "caption_dropout": args.caption_dropout,
        "seed": args.seed, "resolution": args.resolution, "mixed_precision": args.mixed_precision,
        "gradient_checkpointing": args.gradient_checkpointing,
        "validation_prompts": tuple(args.validation_prompt or ()),
        "validation_steps": args.validation_steps if args.validation_prompt else 0,
        "checkpointing_steps": args.checkpointing_steps, "checkpoints_total_limit": args.checkpoints_total_limit,
        "snapshot_steps": snapshots,
    }  # fmt: skip
    if args.target_modules:
        settings["target_modules"] = tuple(m.strip() for m in args.target_modules.split(",") if m.strip())
    if args.max_steps is not None:
        settings["max_steps"] = args.max_steps
    elif snapshots:
        settings["max_steps"] = max(snapshots)
    return {k: v for k, v in settings.items() if v is not None}


def _report(result, method: str, out: str, snapshots: tuple[int, ...]) -> int:
    what = "LoRA" if method == "lora" else "pipeline"
    print(f"trained {result.steps} steps (final loss {result.loss:.4f}); {what} saved to {out}")
    if snapshots:
        print(f"snapshots at steps {', '.join(map(str, snapshots))} in {result.out_dir / 'snapshots'}")
    return 0


def cmd_train_lora(args: argparse.Namespace) -> int:
    from finexl.train.api import train_lora

    set_threads(args)
    settings = _settings(args)
    result = train_lora(args.data, args.out, base=args.base, resume=args.resume or False, overwrite=args.overwrite,
                        device=args.device, progress=not args.quiet, **settings)  # fmt: skip
    return _report(result, "lora", args.out, settings.get("snapshot_steps", ()))


def cmd_train_dreambooth(args: argparse.Namespace) -> int:
    from finexl.train.api import train_dreambooth

    if args.with_prior_preservation and not args.class_prompt:
        raise ConfigError("--with-prior-preservation needs --class-prompt")
    set_threads(args)
    settings = _settings(args)
    result = train_dreambooth(
        args.instance_data, args.out, args.instance_prompt,
        class_prompt=args.class_prompt if args.with_prior_preservation else None, class_data=args.class_data,
        num_class_images=args.num_class_images, mode=args.mode, base=args.base, resume=args.resume or False,
        overwrite=args.overwrite, device=args.device, progress=not args.quiet,
        prior_loss_weight=args.prior_loss_weight, **settings,
    )  # fmt: skip
    return _report(result, args.mode, args.out, settings.get("snapshot_steps", ()))


def add_train_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--base", help="base pipeline folder (default: the toy preset's, data/toy_sd)")
    p.add_argument("--out", required=True, help="output folder (new or empty, unless --resume or --overwrite)")
    g = p.add_argument_group("LoRA")
    g.add_argument("--rank", type=positive_int, default=4, help="LoRA rank (default 4)")
    g.add_argument(
        "--alpha", type=positive_float, help="LoRA alpha; the update is scaled by alpha/rank (default: rank)"
    )
    g.add_argument(
        "--target-modules",
        help="comma-separated UNet module names that get a LoRA (default: attention, transformer projections and "
        "feed-forward, ResNet convolutions; diffusers' scripts use to_q,to_k,to_v,to_out.0)",
    )
    g.add_argument("--train-text-encoder", action="store_true",
                   help="also put a LoRA on the text encoder (both of SDXL's; not for Flux)")  # fmt: skip
    g = p.add_argument_group("optimisation")
    g.add_argument("--lr", type=positive_float, help="learning rate (default 5e-3, for the toy model; 1e-4 is usual "
                   "for SD-size models)")  # fmt: skip
    g.add_argument("--lr-scheduler", help="constant, constant_with_warmup, linear, cosine, ... (default cosine)")
    g.add_argument("--lr-warmup-steps", type=nonnegative_int, help="warm-up steps (default 20)")
    g.add_argument("--batch-size", type=positive_int, help="images per step (default 16)")
    g.add_argument("--gradient-accumulation-steps", type=positive_int, help="micro-batches per step (default 1)")
    g.add_argument("--max-steps", type=positive_int, help="optimizer steps (default 800, or the last snapshot)")
    g.add_argument(
        "--caption-dropout",
        type=float,
        help="fraction of captions replaced by the empty prompt, so guidance carries the change (default 0.2)",
    )
    g.add_argument("--seed", type=nonnegative_int, default=0, help="random seed (default 0)")
    g.add_argument(
        "--resolution",
        type=positive_int,
        help="train at this size; images are centre-cropped and resized to it (default: the pipeline's native size)",
    )
    g.add_argument("--mixed-precision", choices=("no", "fp16", "bf16"), default="no", help="frozen-weight dtype")
    g.add_argument("--gradient-checkpointing", action="store_true", help="trade compute for memory")
    add_compute_arguments(g)
    g = p.add_argument_group("written along the way")
    g.add_argument("--validation-prompt", action="append", help="prompt rendered for validation (repeatable)")
    g.add_argument("--validation-steps", type=positive_int, default=100, help="render validation images every N steps")
    g.add_argument("--checkpointing-steps", type=nonnegative_int, default=0, help="save a checkpoint every N steps")
    g.add_argument("--checkpoints-total-limit", type=positive_int, help="keep only the newest N checkpoints")
    g.add_argument("--snapshots", metavar="STEPS", help="keep LoRA snapshots at these steps, e.g. 50,100,200,400")
    g.add_argument(
        "--resume", nargs="?", const="latest", help="continue from the newest checkpoint in OUT, or from a given one"
    )
    g.add_argument("--overwrite", action="store_true", help="replace a non-empty output folder")


def add_parsers(sub, common: argparse.ArgumentParser) -> None:
    train = sub.add_parser("train", help="train a personalization: LoRA or DreamBooth")
    train_sub = train.add_subparsers(dest="train_command", required=True, metavar="SUBCOMMAND")
    p = train_sub.add_parser(
        "lora",
        parents=[common],
        help="LoRA fine-tuning (peft) of a diffusers pipeline on captioned images",
        description="Fine-tune a LoRA on the UNet attention (and optionally the text encoder) of a Stable "
        "Diffusion-family diffusers pipeline from a local folder (default: the toy pipeline). DATA holds images "
        "with captions: metadata.json (finexl), metadata.jsonl (diffusers imagefolder) or a .txt per image "
        "(kohya). Writes OUT/pytorch_lora_weights.safetensors (diffusers format, rank and alpha in the metadata; "
        "load it with pipe.load_lora_weights(OUT)), OUT/finexl_train_config.json, and on request checkpoints, "
        "snapshots and validation images.",
    )
    p.add_argument("--data", required=True, help="folder of training images and captions")
    add_train_arguments(p)
    p.set_defaults(func=cmd_train_lora)

    p = train_sub.add_parser(
        "dreambooth",
        parents=[common],
        help="DreamBooth: a subject bound to a rare-token prompt, with prior preservation",
        description="Subject-driven fine-tuning: every instance image is captioned with --instance-prompt (a rare "
        "token plus the class, e.g. 'a sks shape'). With --with-prior-preservation, class images of "
        "--class-prompt made by the base model (generated into --class-data when fewer than --num-class-images "
        "are there) keep the class prior, weighted by --prior-loss-weight. --mode full trains the whole UNet and "
        "saves a pipeline folder; --mode lora saves a LoRA.",
    )
    p.add_argument("--instance-data", required=True, help="folder of instance images (captions are not needed)")
    p.add_argument("--instance-prompt", required=True, help="prompt with the identifier, e.g. 'a sks shape'")
    p.add_argument("--class-prompt", help="prompt of the class, e.g. 'a shape'")
    p.add_argument("--with-prior-preservation", action="store_true", help="add the prior-preservation loss")
    p.add_argument("--prior-loss-weight", type=positive_float, default=1.0, help="weight of the prior loss")
    p.add_argument("--num-class-images", type=positive_int, default=100, help="class images to use (default 100)")
    p.add_argument("--class-data", help="class image folder (default: OUT-class-images beside OUT)")
    p.add_argument("--mode", choices=("lora", "full"), default="lora", help="LoRA or full UNet (default lora)")
    add_train_arguments(p)
    p.set_defaults(func=cmd_train_dreambooth)
