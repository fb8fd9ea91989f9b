"""``finexl toyworld render | personalization | measure | eval``: the embedded toy world."""

from __future__ import annotations

import argparse
from pathlib import Path

from finexl.bench.measure import format_measurement, measure
from finexl.cli.common import (
    add_compute_arguments,
    add_sampler_arguments,
    check_output_folder,
    nonnegative_int,
    positive_int,
    sampler_config,
    set_threads,
)
from finexl.config import add_arguments, from_args
from finexl.errors import ConfigError
from finexl.toyworld.aspects import GRADED_BY_NAME, validate_aspect_value
from finexl.toyworld.dataset import item_seed, render_set
from finexl.toyworld.evaluate import EvalConfig, evaluate, format_table
from finexl.toyworld.personalization import parse_spec, render_personalization, spec_record
from finexl.toyworld.render import MAX_SIZE, MIN_SIZE
from finexl.train.api import train_lora
from finexl.train.data import write_image_folder
from finexl.train.trainer import step_list
from finexl.utils import atomic_write_json


def parse_fixed(items: list[str] | None) -> dict[str, str | float]:
    """``["colour=red", "blur=0.8"]`` -> ``{"colour": "red", "blur": 0.8}``, validated."""

    fixed: dict[str, str | float] = {}
    for item in items or []:
        if "=" not in item:
            raise ConfigError(f"--fix expects ASPECT=VALUE, got {item!r}")
        name, value = (s.strip() for s in item.split("=", 1))
        parsed: str | float = value
        if name in GRADED_BY_NAME:
            try:
                parsed = float(value)
            except ValueError as err:
                raise ConfigError(
                    f"level of graded aspect {name!r} must be a number in [0, 1], got {value!r}"
                ) from err
        validate_aspect_value(name, parsed)
        fixed[name] = parsed
    return fixed


def _check_n_and_size(n: int, size: int) -> None:

    if n < 1:
        raise ConfigError(f"--n must be >= 1, got {n}")
    if not (MIN_SIZE <= size <= MAX_SIZE):
        raise ConfigError(f"--size must be in [{MIN_SIZE}, {MAX_SIZE}], got {size}")


def _write(out: Path, data, seed: int, extra_json: dict) -> None:

    records = [{"aspects": data.aspects[i].to_dict(), "item_seed": item_seed(seed, i)} for i in range(len(data))]
    write_image_folder(out, data.images, list(data.captions), records, extra_json)


def cmd_toyworld_render(args: argparse.Namespace) -> int:

    _check_n_and_size(args.n, args.size)
    out = Path(args.out)
    check_output_folder(out, args.overwrite)
    fixed = parse_fixed(args.fix)
    data = render_set(args.n, seed=args.seed, size=args.size, fixed=fixed, progress=not args.quiet)
    _write(
        out,
        data,
        args.seed,
        {"render_config.json": {"n": args.n, "seed": args.seed, "size": args.size, "fixed": fixed}},
    )
    print(f"wrote {len(data)} images, captions and aspect values to {out}")
    return 0


def cmd_toyworld_personalization(args: argparse.Namespace) -> int:

    _check_n_and_size(args.n, args.size)
    out = Path(args.out)
    check_output_folder(out, args.overwrite)
    shifts = parse_spec(args.shift)
    snapshots = args.snapshots or ()
    data = render_personalization(shifts, args.n, seed=args.seed, size=args.size)
    config = {"n": args.n, "seed": args.seed, "size": args.size}
    _write(out, data, args.seed, {"spec.json": spec_record(shifts), "render_config.json": config})
    print(f"wrote {len(data)} instance images for {spec_record(shifts)['spec']} to {out} (ground truth: spec.json)")
    if snapshots:
        set_threads(args)
        result = train_lora(
            out,
            out / "lora",
            max_steps=max(snapshots),
            snapshot_steps=snapshots,
            seed=args.seed,
            progress=not args.quiet,
        )
        print(
            f"trained the toy LoRA {result.steps} steps; snapshots at {', '.join(map(str, snapshots))} in "
            f"{out / 'lora' / 'snapshots'}"
        )
    return 0


def cmd_toyworld_measure(args: argparse.Namespace) -> int:

    if bool(args.lora) == bool(args.model):
        raise ConfigError("give exactly one of --lora FILE and --model DIR")
    set_threads(args)
    result = measure(
        args.lora,
        args.model,
        scale=args.scale,
        base=args.base,
        judge=args.judge,
        n=args.n,
        seed=args.seed,
        sampler=sampler_config(args),
        cache_dir=args.cache,
        device=args.device,
        progress=not args.quiet,
    )
    print(format_measurement(result))
    if args.json:
        atomic_write_json(args.json, result)
        print(f"wrote {args.json}")
    return 0


def cmd_toyworld_eval(args: argparse.Namespace) -> int:

    set_threads(args)
    cfg = from_args(EvalConfig, args)
    result = evaluate(
        cfg,
        pipeline=None if args.skip_generation else (args.pipeline or "toy"),
        clip=args.clip,
        judge=args.judge,
        grid_dir=args.grids,
        progress=not args.quiet,
    )
    print(format_table(result))
    if args.json:
        atomic_write_json(args.json, result)
        print(f"wrote {args.json}")
    return 0


def _add_rendering_arguments(p: argparse.ArgumentParser, n: int, what: str) -> None:
    """What both rendering commands take: how many images, seed, size, and the output folder."""
    p.add_argument("--n", type=int, default=n, help=f"number of {what} (default {n})")
    p.add_argument("--seed", type=nonnegative_int, default=0, help="random seed (default 0)")
    p.add_argument("--size", type=int, default=32, help="image size in pixels, 32-64 (default 32)")
    p.add_argument("--out", required=True, help="output folder (must be new or empty unless --overwrite)")
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty output folder")


def add_parsers(sub, common: argparse.ArgumentParser) -> None:
    toy = sub.add_parser("toyworld", help="the embedded toy world: render images, evaluate the shipped models")
    toy_sub = toy.add_subparsers(dest="toy_command", required=True, metavar="SUBCOMMAND")

    p = toy_sub.add_parser(
        "render",
        parents=[common],
        help="render images with captions and their exact aspect values",
        description="Render random toy-world images. Writes OUT/images/*.png, OUT/metadata.json (file, caption, "
        "exact aspect values per image) and OUT/render_config.json.",
    )
    _add_rendering_arguments(p, n=16, what="images")
    p.add_argument(
        "--fix",
        action="append",
        metavar="ASPECT=VALUE",
        help="hold an aspect fixed, e.g. --fix colour=red --fix blur=0.8 (repeatable)",
    )
    p.set_defaults(func=cmd_toyworld_render)

    p = toy_sub.add_parser(
        "personalization",
        parents=[common],
        help="render a ground-truth personalization data set from a shift spec",
        description="Render instance images whose aspects are shifted by SPEC, captioned without naming the shifted "
        "aspects, so that a model fine-tuned on them bakes the shift in. SPEC is a comma-separated list of "
        "ASPECT=TARGET@STRENGTH: a categorical aspect is set to TARGET with probability STRENGTH "
        "(colour=red@0.8); a graded level u moves to u + STRENGTH (t - u), t being 1 for 'more', 0 for 'less', "
        "or a level (blur=more@0.5, saturation=less@0.7). Writes OUT/images/*.png, OUT/metadata.json and "
        "OUT/spec.json (the intended ground truth).",
    )
    p.add_argument("--shift", required=True, metavar="SPEC", help='e.g. "colour=red@0.8,background=stripes@0.4"')
    _add_rendering_arguments(p, n=200, what="instance images")
    p.add_argument(
        "--snapshots",
        type=step_list,
        metavar="STEPS",
        help="also train the default toy LoRA on the data set and keep LoRA snapshots at these step counts as "
        "levels of the personalization, e.g. 50,100,200,400 (OUT/lora/snapshots/step-NNNNNN/)",
    )
    add_compute_arguments(p, device=False)
    p.set_defaults(func=cmd_toyworld_personalization)

    p = toy_sub.add_parser(
        "measure",
        parents=[common],
        help="what the judge reads on a personalized model's outputs versus its base's (measured ground truth)",
        description="Sample the personalized model (--lora FILE on the base, or --model DIR) and its base on the "
        "same neutral prompts and seeds, read every aspect with the judge, and print per aspect the value "
        "frequencies or mean levels on each and the difference.",
    )
    p.add_argument("--lora", help="LoRA file or folder (diffusers, peft or kohya safetensors) to load on the base")
    p.add_argument("--model", help="a personalized pipeline folder (full fine-tune)")
    p.add_argument("--base", help="base pipeline folder (default: the toy preset's, data/toy_sd)")
    p.add_argument("--scale", type=float, default=1.0, help="LoRA strength (default 1.0)")
    p.add_argument("--judge", help="judge folder (default data/toy_judge)")
    p.add_argument("--n", type=positive_int, default=256, help="images per model (default 256)")
    p.add_argument("--seed", type=nonnegative_int, default=0, help="seed of the first image (default 0)")
    add_sampler_arguments(p)
    p.add_argument("--json", help="write the measurement to this JSON file")
    p.add_argument("--cache", help="image cache folder (default $FINEXL_CACHE or ~/.cache/finexl)")
    add_compute_arguments(p)
    p.set_defaults(func=cmd_toyworld_measure)

    p = toy_sub.add_parser(
        "eval",
        parents=[common],
        help="measure the shipped toy models: judge, CLIP zero-shot, text-to-image adherence and diversity",
        description="Measure the quality of the toy world's three models on held-out data; prints a table and "
        "optionally writes JSON and PNG sample grids. Takes about 5-10 minutes on 2 CPU cores.",
    )
    p.add_argument("--json", help="write the measurements to this JSON file")
    p.add_argument("--grids", help="write PNG sample grids (one per aspect) to this folder")
    p.add_argument("--pipeline", help="text-to-image pipeline folder (default data/toy_sd)")
    p.add_argument("--clip", help="toy CLIP folder (default data/toy_clip)")
    p.add_argument("--judge", help="judge folder (default data/toy_judge)")
    add_arguments(p, EvalConfig)
    p.add_argument("--skip-generation", action="store_true", help="only judge and CLIP (seconds, not minutes)")
    add_compute_arguments(p, device=False)
    p.set_defaults(func=cmd_toyworld_eval)
