"""``finexl train lora`` and ``finexl train dreambooth``."""

from __future__ import annotations

import argparse

from finexl.cli.common import add_compute_arguments, positive_int, set_threads
from finexl.config import add_arguments, given
from finexl.errors import ConfigError
from finexl.train.api import train_dreambooth, train_lora
from finexl.train.trainer import TrainConfig

LORA_SETTINGS = ("rank", "alpha", "target_modules", "train_text_encoder", "text_encoder_target_modules")
OPTIMISATION_SETTINGS = (
    "lr",
    "lr_scheduler",
    "lr_warmup_steps",
    "weight_decay",
    "max_grad_norm",
    "batch_size",
    "gradient_accumulation_steps",
    "max_steps",
    "caption_dropout",
    "seed",
    "resolution",
    "mixed_precision",
    "gradient_checkpointing",
)
OUTPUT_FLAGS = (
    "validation_prompts",
    "validation_steps",
    "checkpointing_steps",
    "checkpoints_total_limit",
    "snapshot_steps",
)


def _settings(args: argparse.Namespace) -> dict:
    """The TrainConfig fields the command line gave; an option left out keeps TrainConfig's default, except that
    ``--snapshots`` without ``--max-steps`` trains to the last snapshot."""
    settings = given(args, TrainConfig)
    if "max_steps" not in settings and settings.get("snapshot_steps"):
        settings["max_steps"] = max(settings["snapshot_steps"])
    return settings


def _report(result, method: str, out: str, snapshots: tuple[int, ...]) -> int:
    what = "LoRA" if method == "lora" else "pipeline"
    print(f"trained {result.steps} steps (final loss {result.loss:.4f}); {what} saved to {out}")
    if snapshots:
        print(f"snapshots at steps {', '.join(map(str, snapshots))} in {result.out_dir / 'snapshots'}")
    return 0


def cmd_train_lora(args: argparse.Namespace) -> int:

    set_threads(args)
    settings = _settings(args)
    result = train_lora(
        args.data,
        args.out,
        base=args.base,
        resume=args.resume or False,
        overwrite=args.overwrite,
        device=args.device,
        progress=not args.quiet,
        **settings,
    )
    return _report(result, "lora", args.out, settings.get("snapshot_steps", ()))


def cmd_train_dreambooth(args: argparse.Namespace) -> int:

    if args.with_prior_preservation and not args.class_prompt:
        raise ConfigError("--with-prior-preservation needs --class-prompt")
    set_threads(args)
    settings = _settings(args)
    result = train_dreambooth(
        args.instance_data,
        args.out,
        args.instance_prompt,
        class_prompt=args.class_prompt if args.with_prior_preservation else None,
        class_data=args.class_data,
        num_class_images=args.num_class_images,
        mode=args.mode,
        base=args.base,
        resume=args.resume or False,
        overwrite=args.overwrite,
        device=args.device,
        progress=not args.quiet,
        **settings,
    )
    return _report(result, args.mode, args.out, settings.get("snapshot_steps", ()))


def add_train_arguments(p: argparse.ArgumentParser) -> None:
    """The training flags, generated from :class:`~finexl.train.trainer.TrainConfig` in three groups."""
    p.add_argument("--base", help="base pipeline folder (default: the toy preset's, data/toy_sd)")
    p.add_argument("--out", required=True, help="output folder (new or empty, unless --resume or --overwrite)")
    add_arguments(p.add_argument_group("LoRA"), TrainConfig, only=LORA_SETTINGS)
    g = p.add_argument_group("optimisation")
    add_arguments(g, TrainConfig, only=OPTIMISATION_SETTINGS)
    add_compute_arguments(g)
    g = p.add_argument_group("written along the way")
    add_arguments(g, TrainConfig, only=OUTPUT_FLAGS)
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
    add_arguments(p, TrainConfig, only=("prior_loss_weight",))
    p.add_argument("--num-class-images", type=positive_int, default=100, help="class images to use (default 100)")
    p.add_argument("--class-data", help="class image folder (default: OUT-class-images beside OUT)")
    p.add_argument("--mode", choices=("lora", "full"), default="lora", help="LoRA or full UNet (default lora)")
    add_train_arguments(p)
    p.set_defaults(func=cmd_train_dreambooth)
