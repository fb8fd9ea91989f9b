"""The ``finexl`` command: a thin layer that builds a config from arguments and calls one library function."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

logger = logging.getLogger("finexl")


class CLIError(Exception):
    """A user error the CLI reports in one line, without a traceback."""


# ----------------------------------------------------------------------------------------------------------------
# finexl env


def cmd_env(args: argparse.Namespace) -> int:
    import platform

    import finexl

    rows = [("finexl", finexl.__version__), ("python", platform.python_version()), ("platform", platform.platform())]
    for name in ("torch", "diffusers", "transformers", "peft", "numpy", "scipy", "sklearn", "safetensors", "PIL"):
        try:
            module = __import__(name)
            rows.append((name, getattr(module, "__version__", "?")))
        except ImportError:
            rows.append((name, "not installed"))
    # open_clip imports torchvision, which can break the CPU stack; report it without importing it.
    from importlib.util import find_spec

    rows.append(("open_clip", "installed (optional extra)" if find_spec("open_clip") else "not installed (optional)"))
    import torch

    rows.append(("device", "cuda: " + torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"))
    rows.append(("torch threads", str(torch.get_num_threads())))
    try:
        from finexl.utils import data_dir

        rows.append(("data", str(data_dir())))
    except FileNotFoundError as err:
        rows.append(("data", f"missing ({err})"))
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        print(f"{key:<{width}}  {value}")
    return 0


# ----------------------------------------------------------------------------------------------------------------
# finexl toyworld render


def parse_fixed(items: list[str] | None) -> dict[str, str | float]:
    """``["colour=red", "blur=0.8"]`` -> ``{"colour": "red", "blur": 0.8}``, validated."""
    from finexl.toyworld.aspects import GRADED_BY_NAME, AspectError, validate_aspect_value

    fixed: dict[str, str | float] = {}
    for item in items or []:
        if "=" not in item:
            raise CLIError(f"--fix expects ASPECT=VALUE, got {item!r}")
        name, value = (s.strip() for s in item.split("=", 1))
        parsed: str | float = value
        if name in GRADED_BY_NAME:
            try:
                parsed = float(value)
            except ValueError as err:
                raise CLIError(f"level of graded aspect {name!r} must be a number in [0, 1], got {value!r}") from err
        try:
            validate_aspect_value(name, parsed)
        except AspectError as err:
            raise CLIError(str(err)) from err
        fixed[name] = parsed
    return fixed


def _check_output_folder(out: Path, overwrite: bool) -> None:
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise CLIError(f"output folder {out} exists and is not empty; pass --overwrite to replace it")


def _write_rendered_set(out: Path, data, seed: int, extra_json: dict[str, dict]) -> None:
    """Images to ``out/images``, one metadata record per image, and extra JSON files; all or nothing."""
    from PIL import Image

    from finexl.toyworld.dataset import item_seed
    from finexl.utils import atomic_dir, atomic_write_json

    with atomic_dir(out) as tmp:
        (tmp / "images").mkdir()
        records = []
        for i in range(len(data)):
            name = f"images/{i:05d}.png"
            Image.fromarray(data.images[i]).save(tmp / name)
            records.append(
                {
                    "file": name,
                    "caption": data.captions[i],
                    "aspects": data.aspects[i].to_dict(),
                    "item_seed": item_seed(seed, i),
                }
            )
        atomic_write_json(tmp / "metadata.json", records)
        for filename, obj in extra_json.items():
            atomic_write_json(tmp / filename, obj)


def _check_n_and_size(n: int, size: int) -> None:
    from finexl.toyworld.render import MAX_SIZE, MIN_SIZE

    if n < 1:
        raise CLIError(f"--n must be >= 1, got {n}")
    if not (MIN_SIZE <= size <= MAX_SIZE):
        raise CLIError(f"--size must be in [{MIN_SIZE}, {MAX_SIZE}], got {size}")


def cmd_toyworld_render(args: argparse.Namespace) -> int:
    from finexl.toyworld.dataset import render_set

    _check_n_and_size(args.n, args.size)
    out = Path(args.out)
    _check_output_folder(out, args.overwrite)
    fixed = parse_fixed(args.fix)
    data = render_set(args.n, seed=args.seed, size=args.size, fixed=fixed, progress=not args.quiet)
    config = {"n": args.n, "seed": args.seed, "size": args.size, "fixed": fixed}
    _write_rendered_set(out, data, args.seed, {"render_config.json": config})
    print(f"wrote {len(data)} images, captions and aspect values to {out}")
    return 0


# ----------------------------------------------------------------------------------------------------------------
# finexl toyworld personalization


def cmd_toyworld_personalization(args: argparse.Namespace) -> int:
    from finexl.toyworld.aspects import AspectError
    from finexl.toyworld.personalization import parse_spec, render_personalization, spec_record

    _check_n_and_size(args.n, args.size)
    out = Path(args.out)
    _check_output_folder(out, args.overwrite)
    try:
        shifts = parse_spec(args.shift)
    except AspectError as err:
        raise CLIError(str(err)) from err
    data = render_personalization(shifts, args.n, seed=args.seed, size=args.size)
    config = {"n": args.n, "seed": args.seed, "size": args.size}
    _write_rendered_set(out, data, args.seed, {"spec.json": spec_record(shifts), "render_config.json": config})
    print(f"wrote {len(data)} instance images for {spec_record(shifts)['spec']} to {out} (ground truth: spec.json)")
    return 0


# ----------------------------------------------------------------------------------------------------------------
# finexl toyworld eval


def cmd_toyworld_eval(args: argparse.Namespace) -> int:
    import torch

    from finexl.sampling import SamplerConfig
    from finexl.toyworld.clip import load_toy_clip
    from finexl.toyworld.diffusion import load_toy_pipeline
    from finexl.toyworld.evaluate import EvalConfig, evaluate_models, format_table
    from finexl.toyworld.judge import load_judge
    from finexl.utils import atomic_write_json

    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = EvalConfig(
        n_held_out=args.n_held_out,
        n_per_value=args.n_per_value,
        n_neutral=args.n_neutral,
        sampler=SamplerConfig(num_inference_steps=args.steps, guidance_scale=args.guidance_scale),
    )
    try:
        judge = load_judge(args.judge)
        clip_model, tokenizer = load_toy_clip(args.clip)
        pipe = None if args.skip_generation else load_toy_pipeline(args.pipeline)
    except (FileNotFoundError, ValueError) as err:
        raise CLIError(str(err)) from err
    result = evaluate_models(pipe, clip_model, tokenizer, judge, cfg, grid_dir=args.grids, progress=not args.quiet)
    print(format_table(result))
    if args.json:
        atomic_write_json(args.json, result)
        print(f"wrote {args.json}")
    return 0


# ----------------------------------------------------------------------------------------------------------------
# parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="finexl",
        description="Explain how a personalized text-to-image model differs from its base, aspect by aspect. "
        "Every command defaults to the embedded toy world (data/).",
    )
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    common.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("env", parents=[common], help="versions, device and data folder")
    p.set_defaults(func=cmd_env)

    toy = sub.add_parser("toyworld", help="the embedded toy world: render images, evaluate the shipped models")
    toy_sub = toy.add_subparsers(dest="toy_command", required=True, metavar="SUBCOMMAND")

    p = toy_sub.add_parser(
        "render",
        parents=[common],
        help="render images with captions and their exact aspect values",
        description="Render random toy-world images. Writes OUT/images/*.png, OUT/metadata.json (file, caption, "
        "exact aspect values per image) and OUT/render_config.json.",
    )
    p.add_argument("--n", type=int, default=16, help="number of images (default 16)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--size", type=int, default=32, help="image size in pixels, 32-64 (default 32)")
    p.add_argument(
        "--fix",
        action="append",
        metavar="ASPECT=VALUE",
        help="hold an aspect fixed, e.g. --fix colour=red --fix blur=0.8 (repeatable)",
    )
    p.add_argument("--out", required=True, help="output folder (must be new or empty unless --overwrite)")
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty output folder")
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
    p.add_argument("--n", type=int, default=200, help="number of instance images (default 200)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--size", type=int, default=32, help="image size in pixels, 32-64 (default 32)")
    p.add_argument("--out", required=True, help="output folder (must be new or empty unless --overwrite)")
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty output folder")
    p.set_defaults(func=cmd_toyworld_personalization)

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
    p.add_argument("--n-held-out", type=int, default=2000, help="rendered images for judge/CLIP accuracy")
    p.add_argument("--n-per-value", type=int, default=24, help="generated images per prompted value")
    p.add_argument("--n-neutral", type=int, default=256, help="generated images for the diversity measure")
    p.add_argument("--steps", type=int, default=25, help="sampler steps (default 25)")
    p.add_argument("--guidance-scale", type=float, default=4.0, help="classifier-free guidance (default 4.0)")
    p.add_argument("--skip-generation", action="store_true", help="only judge and CLIP (seconds, not minutes)")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (default: torch's choice)")
    p.set_defaults(func=cmd_toyworld_eval)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    try:
        return args.func(args)
    except CLIError as err:
        print(f"finexl: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
