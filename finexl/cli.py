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
    snapshots = _parse_steps(args.snapshots, "--snapshots")
    data = render_personalization(shifts, args.n, seed=args.seed, size=args.size)
    config = {"n": args.n, "seed": args.seed, "size": args.size}
    _write_rendered_set(out, data, args.seed, {"spec.json": spec_record(shifts), "render_config.json": config})
    print(f"wrote {len(data)} instance images for {spec_record(shifts)['spec']} to {out} (ground truth: spec.json)")
    if snapshots:
        return _train_snapshots(out, snapshots, args)
    return 0


def _train_snapshots(out: Path, snapshots: tuple[int, ...], args: argparse.Namespace) -> int:
    """Train the default toy LoRA on a personalization data set, keeping LoRA snapshots as levels."""
    import torch

    from finexl.loading import fingerprint_folder, load_pipeline
    from finexl.train.data import load_image_folder
    from finexl.train.trainer import TrainConfig, train
    from finexl.utils import data_dir

    if args.threads:
        torch.set_num_threads(args.threads)
    base = data_dir() / "toy_sd"
    cfg = TrainConfig(max_steps=max(snapshots), snapshot_steps=snapshots, seed=args.seed)
    try:
        pipe = load_pipeline(base)
        result = train(
            pipe, load_image_folder(out), cfg, out / "lora", base_fingerprint=fingerprint_folder(base),
            progress=not args.quiet,
        )  # fmt: skip
    except (FileNotFoundError, ValueError) as err:
        raise CLIError(str(err)) from err
    print(f"trained the toy LoRA {result.steps} steps; snapshots at {', '.join(map(str, snapshots))} in "
          f"{out / 'lora' / 'snapshots'}")  # fmt: skip
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
# finexl train lora | dreambooth


def _parse_steps(text: str | None, flag: str) -> tuple[int, ...]:
    if not text:
        return ()
    try:
        steps = tuple(int(s) for s in text.split(",") if s.strip())
    except ValueError as err:
        raise CLIError(f"{flag} expects comma-separated step counts like 50,100,200, got {text!r}") from err
    if not steps or min(steps) < 1:
        raise CLIError(f"{flag} expects positive step counts, got {text!r}")
    return steps


def _train_config(args: argparse.Namespace, **extra):
    from finexl.train.trainer import DEFAULT_TARGET_MODULES, TrainConfig

    snapshots = _parse_steps(args.snapshots, "--snapshots")
    try:
        return TrainConfig(
            rank=args.rank,
            alpha=args.alpha if args.alpha is not None else float(args.rank),
            target_modules=tuple(m.strip() for m in args.target_modules.split(",") if m.strip())
            if args.target_modules
            else DEFAULT_TARGET_MODULES,
            train_text_encoder=args.train_text_encoder,
            lr=args.lr,
            lr_scheduler=args.lr_scheduler,
            lr_warmup_steps=args.lr_warmup_steps,
            batch_size=args.batch_size,
            gradient_accumulation_steps=args.gradient_accumulation_steps,
            max_steps=args.max_steps if args.max_steps else max(snapshots or (TrainConfig.max_steps,)),
            caption_dropout=args.caption_dropout,
            seed=args.seed,
            resolution=args.resolution,
            mixed_precision=args.mixed_precision,
            gradient_checkpointing=args.gradient_checkpointing,
            validation_prompts=tuple(args.validation_prompt or ()),
            validation_steps=args.validation_steps if args.validation_prompt else 0,
            checkpointing_steps=args.checkpointing_steps,
            checkpoints_total_limit=args.checkpoints_total_limit,
            snapshot_steps=snapshots,
            **extra,
        )
    except ValueError as err:
        raise CLIError(str(err)) from err


def _prepare_train_output(out: Path, args: argparse.Namespace) -> None:
    import shutil

    if args.resume:
        return
    if out.exists() and any(out.iterdir()):
        if not args.overwrite:
            raise CLIError(
                f"output folder {out} exists and is not empty; pass --resume to continue its run or --overwrite to "
                "replace it"
            )
        shutil.rmtree(out)


def _run_training(args: argparse.Namespace, cfg, data_dir: str, class_dir: str | None = None) -> int:
    import torch

    from finexl.loading import fingerprint_folder, load_pipeline
    from finexl.train.checkpoint import CheckpointError
    from finexl.train.data import DataError, load_image_folder
    from finexl.train.dreambooth import ensure_class_images
    from finexl.train.trainer import native_resolution, train
    from finexl.utils import data_dir as toy_data_dir

    if args.threads:
        torch.set_num_threads(args.threads)
    base = Path(args.base) if args.base else toy_data_dir() / "toy_sd"
    out = Path(args.out)
    try:
        pipe = load_pipeline(base)
        resolution = cfg.resolution or native_resolution(pipe)
        data = load_image_folder(data_dir, resolution=resolution, require_captions=cfg.instance_prompt is None)
        _prepare_train_output(out, args)
        class_data = None
        if class_dir is not None:
            class_data = ensure_class_images(
                pipe, class_dir, cfg.class_prompt, args.num_class_images, resolution, seed=args.seed,
                progress=not args.quiet,
            )  # fmt: skip
        result = train(
            pipe, data, cfg, out, class_data=class_data, resume=args.resume or False,
            base_fingerprint=fingerprint_folder(base), progress=not args.quiet,
        )  # fmt: skip
    except (FileNotFoundError, DataError, CheckpointError, ValueError, FloatingPointError) as err:
        raise CLIError(str(err)) from err
    what = "LoRA" if cfg.method == "lora" else "pipeline"
    print(f"trained {result.steps} steps (final loss {result.loss:.4f}); {what} saved to {out}")
    if cfg.snapshot_steps:
        print(f"snapshots at steps {', '.join(map(str, cfg.snapshot_steps))} in {out / 'snapshots'}")
    return 0


def cmd_train_lora(args: argparse.Namespace) -> int:
    cfg = _train_config(args)
    return _run_training(args, cfg, args.data)


def cmd_train_dreambooth(args: argparse.Namespace) -> int:
    if args.with_prior_preservation and not args.class_prompt:
        raise CLIError("--with-prior-preservation needs --class-prompt")
    cfg = _train_config(
        args,
        method=args.mode,
        instance_prompt=args.instance_prompt,
        class_prompt=args.class_prompt if args.with_prior_preservation else None,
        prior_loss_weight=args.prior_loss_weight,
    )
    class_dir = None
    if args.with_prior_preservation:
        class_dir = args.class_data or str(Path(args.out).with_name(Path(args.out).name + "-class-images"))
    return _run_training(args, cfg, args.instance_data, class_dir)


# ----------------------------------------------------------------------------------------------------------------
# finexl toyworld measure


def cmd_toyworld_measure(args: argparse.Namespace) -> int:
    import torch

    from finexl.loading import LoraError, load_lora, load_pipeline
    from finexl.sampling import BadImagesError, SamplerConfig, sample_images
    from finexl.toyworld.judge import load_judge
    from finexl.toyworld.measure import compare_readings, format_measurement, neutral_requests
    from finexl.utils import atomic_write_json

    if bool(args.lora) == bool(args.model):
        raise CLIError("give exactly one of --lora FILE and --model DIR")
    if args.threads:
        torch.set_num_threads(args.threads)
    sampler = SamplerConfig(num_inference_steps=args.steps, guidance_scale=args.guidance_scale)
    try:
        prompts, seeds = neutral_requests(args.n, args.seed)
        judge = load_judge(args.judge)
        pipe = load_pipeline(args.base)
        base_images = sample_images(pipe, prompts, seeds, sampler, progress=not args.quiet)
        if args.lora:
            load_lora(pipe, args.lora, scale=args.scale)
            tuned = pipe
        else:
            tuned = load_pipeline(args.model)
        tuned_images = sample_images(tuned, prompts, seeds, sampler, progress=not args.quiet)
    except (FileNotFoundError, ValueError, LoraError, BadImagesError) as err:
        raise CLIError(str(err)) from err
    result = compare_readings(judge, base_images, tuned_images)
    result["settings"] = {
        "lora": args.lora, "model": args.model, "base": args.base, "scale": args.scale, "n": args.n,
        "seed": args.seed, "steps": args.steps, "guidance_scale": args.guidance_scale,
    }  # fmt: skip
    print(format_measurement(result))
    if args.json:
        atomic_write_json(args.json, result)
        print(f"wrote {args.json}")
    return 0


# ----------------------------------------------------------------------------------------------------------------
# finexl explain


def cmd_explain(args: argparse.Namespace) -> int:
    import torch

    from finexl.explain.concepts import ConceptBankError
    from finexl.explain.explainer import ExplainConfig, PromptsError, explain, format_explanation
    from finexl.loading import LoraError
    from finexl.narrate.llm import LLMError
    from finexl.sampling import BadImagesError, SamplerConfig
    from finexl.utils import atomic_write_json

    if args.threads:
        torch.set_num_threads(args.threads)
    _parse_aspects(args.aspects)
    out = Path(args.out) if args.out else None
    if out is not None and (out / "explanation.json").exists() and not args.overwrite:
        raise CLIError(f"{out / 'explanation.json'} exists; pass --overwrite to replace it")
    try:
        cfg = ExplainConfig(
            base=args.base, lora=args.lora, model=args.model, lora_scale=args.scale, prompts=args.prompts,
            direction_prompts=args.direction_prompts, samples=args.samples, clip=args.clip, concepts=args.concepts,
            method=args.method, seed=args.seed,
            n_bootstrap=args.bootstrap, null=not args.no_null, cache_dir=args.cache, vlm=args.vlm,
            vlm_endpoint=args.vlm_endpoint, vlm_model=args.vlm_model, vlm_pairs=args.vlm_pairs,
            sampler=SamplerConfig(num_inference_steps=args.steps, guidance_scale=args.guidance_scale),
            height=args.height, width=args.width,
        )  # fmt: skip
        explanation = explain(cfg, progress=not args.quiet)
    except (FileNotFoundError, ValueError, LoraError, BadImagesError, PromptsError, ConceptBankError,
            ImportError, FloatingPointError, LLMError) as err:  # fmt: skip
        raise CLIError(str(err)) from err
    print(format_explanation(explanation, top=args.top))
    narration = _narrate(explanation, args, cache_dir=args.cache)
    explanation["sentences"] = narration.to_json()
    print()
    print(narration.text)
    if narration.note:
        print(f"note: {narration.note}")
    if out is not None:
        atomic_write_json(out / "explanation.json", explanation)
        print(f"wrote {out / 'explanation.json'}")
    return 0


def _parse_aspects(text: str | None) -> list[str] | None:
    if text is None:
        return None
    names = [t.strip() for t in text.split(",") if t.strip()]
    if not names:
        raise CLIError("--aspects needs a comma-separated list of aspect names")
    return names


def _narrate(explanation: dict, args: argparse.Namespace, cache_dir: str | None):
    """Templated sentences, or the LLM's when one is given (checked; falls back to the template)."""
    from finexl.explain.paired import default_cache_dir
    from finexl.narrate.llm import EndpointChat, LLMError, LocalChat
    from finexl.narrate.narrator import narrate

    backend = None
    cache = cache_dir or default_cache_dir()
    try:
        if args.llm and args.llm_endpoint:
            raise CLIError("give either --llm FOLDER or --llm-endpoint URL, not both")
        if args.llm_endpoint:
            if not args.llm_model:
                raise CLIError("--llm-endpoint needs --llm-model NAME")
            backend = EndpointChat(args.llm_endpoint, args.llm_model, timeout=args.llm_timeout, cache_dir=cache)
        elif args.llm:
            backend = LocalChat(args.llm, cache_dir=cache)
    except (LLMError, ValueError) as err:
        from finexl.narrate.narrator import Narration
        from finexl.narrate.templates import render

        try:
            text = render(explanation, args.format, _parse_aspects(args.aspects))
        except ValueError as bad:
            raise CLIError(str(bad)) from bad
        return Narration(text, "template", args.format, 0, f"LLM unavailable ({err}); templated sentences used")
    try:
        return narrate(explanation, backend, args.format, _parse_aspects(args.aspects), retries=args.llm_retries)
    except ValueError as err:
        raise CLIError(str(err)) from err


def cmd_narrate(args: argparse.Namespace) -> int:
    import json

    from finexl.utils import atomic_write_json

    path = Path(args.explanation)
    try:
        explanation = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as err:
        raise CLIError(f"explanation file {path} does not exist") from err
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise CLIError(f"{path} is not an explanation JSON file: {err}") from err
    if not isinstance(explanation, dict) or "aspects" not in explanation:
        raise CLIError(f"{path} is not an explanation JSON file (no 'aspects')")
    narration = _narrate(explanation, args, cache_dir=args.cache)
    print(narration.text)
    if narration.note:
        print(f"note: {narration.note}")
    if args.write:
        explanation["sentences"] = narration.to_json()
        atomic_write_json(path, explanation)
    return 0


# ----------------------------------------------------------------------------------------------------------------
# finexl bench build


def cmd_bench_build(args: argparse.Namespace) -> int:
    import torch

    from finexl.bench.suites import BuildConfig, build_suite

    if args.threads:
        torch.set_num_threads(args.threads)
    defaults = BuildConfig()
    cfg = BuildConfig(n_images=args.n_images or defaults.n_images, max_steps=args.max_steps or defaults.max_steps)
    try:
        records = build_suite(args.suite, Path(args.out) / args.suite, cfg, base=args.base, progress=not args.quiet)
    except (FileNotFoundError, ValueError) as err:
        raise CLIError(str(err)) from err
    print(f"suite {args.suite}: {len(records)} models in {Path(args.out) / args.suite / 'models'}")
    return 0


def cmd_bench_run(args: argparse.Namespace) -> int:
    import torch

    from finexl.bench.metrics import all_metrics, compare_methods, comparison_table, markdown_table
    from finexl.bench.runner import BenchConfig, SuiteError, load_truths, run_models
    from finexl.utils import atomic_write_json

    if args.threads:
        torch.set_num_threads(args.threads)
    names = [n.strip() for n in args.suite.split(",") if n.strip()]
    methods = [m.strip() for m in args.methods.split(",")] if args.methods else list(BenchConfig.methods)
    samples, resamples = (32, 50) if args.quick else (args.samples, args.bootstrap)
    cfg = BenchConfig(methods=tuple(methods), samples=samples, n_bootstrap=resamples, n_null=resamples,
                      unpaired=args.unpaired, cache_dir=args.cache)  # fmt: skip
    try:
        truths = load_truths(args.suites, names)
        records = run_models(truths, cfg, progress=not args.quiet)
    except (SuiteError, FileNotFoundError, ValueError) as err:
        raise CLIError(str(err)) from err
    metrics = all_metrics(records, methods)
    print(markdown_table(metrics, methods))
    if "_multi_selection_by_judge" in metrics:
        by_judge = metrics["_multi_selection_by_judge"]
        print(f"\nmulti_selection made from the judge's readings of what changed: {by_judge:.3f}")
    if "_top1_of_judge" in metrics:
        print(f"top1 made from the judge's readings (shifted aspect moved most): {metrics['_top1_of_judge']:.3f}")
    if "_paired_over_unpaired_interval_width" in metrics:
        print(f"\npaired / unpaired interval width: {metrics['_paired_over_unpaired_interval_width']:.3f}")
    comparison = None
    if "finexl" in methods and len(methods) > 1:
        comparison = compare_methods(records, methods)
        print(
            f"\nfinexl against the other methods, paired bootstrap over the models ({comparison['resamples']} "
            f"resamples; `finexl bench compare` redoes it from the JSON):\n{comparison_table(comparison)}"
        )
    if args.json:
        config = {"methods": methods, "samples": samples, "bootstrap": resamples}
        atomic_write_json(args.json, {"suites": names, "config": config, "metrics": metrics,
                                      "comparison": comparison, "records": records})  # fmt: skip
        print(f"wrote {args.json}")
    if args.labels:
        from finexl.bench.labels import labels_from_records, write_labels

        write_labels(args.labels, labels_from_records(records))
        print(f"wrote the suites' labels to {args.labels}")
    return 0


def cmd_bench_compare(args: argparse.Namespace) -> int:
    import json

    from finexl.bench.metrics import UNIT_NAMES, compare_methods, comparison_table
    from finexl.utils import atomic_write_json

    try:
        results = json.loads(Path(args.results).read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise CLIError(f"cannot read benchmark results {args.results}: {err}") from err
    records = results.get("records") if isinstance(results, dict) else None
    if not records:
        raise CLIError(f"{args.results} holds no per-model records: write it with `finexl bench run ... --json FILE`")
    methods = results.get("config", {}).get("methods") or list(records[0]["methods"])
    if not 0 < args.level < 1:
        raise CLIError(f"--level must lie between 0 and 1, got {args.level}")
    try:
        comparison = compare_methods(records, methods, reference=args.reference, n_resamples=args.resamples,
                                     seed=args.seed, level=args.level)  # fmt: skip
    except ValueError as err:
        raise CLIError(str(err)) from err
    units = ", ".join(f"{n} {UNIT_NAMES[kind]}" for kind, n in comparison["units"].items() if n)
    print(f"{args.reference} against the other methods of {args.results}, paired bootstrap over {units} "
          f"({args.resamples} resamples, seed {args.seed}):")  # fmt: skip
    print(comparison_table(comparison))
    if args.json:
        atomic_write_json(args.json, comparison)
        print(f"wrote {args.json}")
    return 0


def cmd_bench_score(args: argparse.Namespace) -> int:
    import json

    from finexl.bench.labels import LabelError, read_labels, score_labels

    explanations = {}
    for path in args.explanations:
        p = Path(path)
        file = p / "explanation.json" if p.is_dir() else p
        try:
            expl = json.loads(file.read_text(encoding="utf-8"))
        except (OSError, ValueError) as err:
            raise CLIError(f"cannot read explanation {file}: {err}") from err
        explanations[file.parent.name if file.name == "explanation.json" else file.stem] = expl
    try:
        aspects = sorted({a["aspect"] for e in explanations.values() for a in e["aspects"]})
        result = score_labels(read_labels(args.labels, aspects), explanations)
    except (LabelError, FileNotFoundError, KeyError) as err:
        raise CLIError(str(err)) from err
    for key, value in result.items():
        print(f"{key:<20} {value if value is None or isinstance(value, int) else f'{value:.3f}'}")
    return 0


# ----------------------------------------------------------------------------------------------------------------
# parser


def _add_train_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--base", help="base pipeline folder (default data/toy_sd, the toy pipeline)")
    p.add_argument("--out", required=True, help="output folder (new or empty, unless --resume or --overwrite)")
    g = p.add_argument_group("LoRA")
    g.add_argument("--rank", type=int, default=4, help="LoRA rank (default 4)")
    g.add_argument("--alpha", type=float, help="LoRA alpha; the update is scaled by alpha/rank (default: rank)")
    g.add_argument(
        "--target-modules",
        help="comma-separated UNet module names that get a LoRA (default: attention, transformer projections and "
        "feed-forward, ResNet convolutions; diffusers' scripts use to_q,to_k,to_v,to_out.0)",
    )
    g.add_argument("--train-text-encoder", action="store_true", help="also put a LoRA on the text encoder")
    g = p.add_argument_group("optimisation")
    g.add_argument(
        "--lr",
        type=float,
        default=5e-3,
        help="learning rate (default 5e-3, for the toy model; 1e-4 is usual for SD-size models)",
    )
    g.add_argument("--lr-scheduler", default="cosine", help="constant, constant_with_warmup, linear, cosine, ...")
    g.add_argument("--lr-warmup-steps", type=int, default=20, help="warm-up steps (default 20)")
    g.add_argument("--batch-size", type=int, default=16, help="images per step (default 16)")
    g.add_argument("--gradient-accumulation-steps", type=int, default=1, help="micro-batches per step")
    g.add_argument("--max-steps", type=int, default=0, help="optimizer steps (default 800, or the last snapshot)")
    g.add_argument(
        "--caption-dropout",
        type=float,
        default=0.2,
        help="fraction of captions replaced by the empty prompt, so guidance carries the change (default 0.2)",
    )
    g.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    g.add_argument(
        "--resolution",
        type=int,
        help="train at this size; images are centre-cropped and resized to it (default: the pipeline's native size)",
    )
    g.add_argument("--mixed-precision", choices=("no", "fp16", "bf16"), default="no", help="frozen-weight dtype")
    g.add_argument("--gradient-checkpointing", action="store_true", help="trade compute for memory")
    g.add_argument("--threads", type=int, default=0, help="torch CPU threads (default: torch's choice)")
    g = p.add_argument_group("written along the way")
    g.add_argument("--validation-prompt", action="append", help="prompt rendered for validation (repeatable)")
    g.add_argument("--validation-steps", type=int, default=100, help="render validation images every N steps")
    g.add_argument("--checkpointing-steps", type=int, default=0, help="save a resumable checkpoint every N steps")
    g.add_argument("--checkpoints-total-limit", type=int, help="keep only the newest N checkpoints")
    g.add_argument("--snapshots", metavar="STEPS", help="keep LoRA snapshots at these steps, e.g. 50,100,200,400")
    g.add_argument(
        "--resume", nargs="?", const="latest", help="continue from the newest checkpoint in OUT, or from a given one"
    )
    g.add_argument("--overwrite", action="store_true", help="replace a non-empty output folder")


def _add_narration_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("sentences")
    g.add_argument(
        "--format",
        default="bullets",
        choices=["summary", "bullets", "paragraph"],
        help="one-line summary, a bullet per aspect (default), or a paragraph grouped by aspect family",
    )
    g.add_argument("--aspects", help="comma-separated aspects to report even when unchanged, e.g. pose,blur")
    g.add_argument("--llm", help="local transformers chat model folder to write the sentences")
    g.add_argument("--llm-endpoint", help="OpenAI-compatible API base URL, e.g. http://localhost:11434/v1 (Ollama)")
    g.add_argument("--llm-model", help="model name at --llm-endpoint")
    g.add_argument("--llm-timeout", type=float, default=60.0, help="seconds to wait for the endpoint (default 60)")
    g.add_argument("--llm-retries", type=int, default=2, help="retries after an unfaithful answer (default 2)")


def build_parser() -> argparse.ArgumentParser:
    from finexl.bench.suites import SUITES

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

    p = sub.add_parser(
        "explain",
        parents=[common],
        help="explain how a personalized model differs from its base, aspect by aspect",
        description="Sample the base and the personalized model on the same prompts and seeds (cached by model "
        "fingerprint, prompt, seed and sampler settings), embed the images with CLIP, decompose the mean paired "
        "difference onto the text directions of a concept bank, and score every aspect in [0, 1] with a bootstrap "
        "interval; an aspect is CHANGED when its interval lies above what the base reaches against itself with "
        "other seeds. Without --base, --clip or --concepts it uses the toy world. Prints a table; with --out "
        "writes OUT/explanation.json.",
    )
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--lora", help="LoRA file (.safetensors) or a folder holding pytorch_lora_weights.safetensors")
    what.add_argument("--model", help="fine-tuned diffusers pipeline folder (a full fine-tune / DreamBooth)")
    p.add_argument("--base", help="base pipeline folder (default data/toy_sd)")
    p.add_argument("--scale", type=float, default=1.0, help="LoRA strength (default 1.0)")
    p.add_argument("--prompts", help="UTF-8 file, one prompt per line (default: the toy world's neutral prompts)")
    p.add_argument("--samples", type=int, default=128, help="image pairs (default 128); prompts are cycled")
    p.add_argument(
        "--direction-prompts",
        help="UTF-8 file of prompts to build the concept directions from (default: --prompts). For a DreamBooth "
        "model sampled on its instance prompt ('a sks dog'), give the class prompt ('a dog'): the text encoder has "
        "no meaning for the identifier",
    )
    p.add_argument("--clip", help="CLIP: 'toy' (default), a transformers CLIP folder, or open_clip:MODEL:CHECKPOINT")
    p.add_argument("--concepts", help="concept bank JSON file, or 'toy' (default) / 'real' for the shipped banks")
    p.add_argument(
        "--method",
        default="finexl",
        choices=["finexl", "paper", "nnls", "whitened-nnls", "sparse", "gsclip", "visdiff", "splice"],
        help="decomposition (default finexl; see finexl/explain/decompose.py)",
    )
    p.add_argument("--out", help="write OUT/explanation.json")
    p.add_argument("--overwrite", action="store_true", help="replace an existing OUT/explanation.json")
    p.add_argument("--seed", type=int, default=0, help="seed of the first pair; pair i uses seed + i (default 0)")
    p.add_argument("--bootstrap", type=int, default=200, help="bootstrap resamples for the intervals (default 200)")
    p.add_argument("--no-null", action="store_true", help="skip the null calibration (no CHANGED verdicts)")
    p.add_argument("--cache", help="image and direction cache folder (default $FINEXL_CACHE or ~/.cache/finexl)")
    p.add_argument("--steps", type=int, default=25, help="sampler steps (default 25)")
    p.add_argument("--guidance-scale", type=float, default=4.0, help="classifier-free guidance (default 4.0)")
    p.add_argument("--height", type=int, help="image height (default: the base's native size)")
    p.add_argument("--width", type=int, help="image width (default: the base's native size)")
    p.add_argument("--top", type=int, default=None, help="print only the top N aspects")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (default: torch's choice)")
    g = p.add_argument_group("concept proposals by a vision-language model (optional)")
    g.add_argument("--vlm", help="local transformers vision-language model folder")
    g.add_argument(
        "--vlm-endpoint", help="OpenAI-compatible API base URL with image input, e.g. http://localhost:8000/v1"
    )
    g.add_argument("--vlm-model", help="model name at --vlm-endpoint")
    g.add_argument("--vlm-pairs", type=int, default=8, help="image pairs shown to the VLM (default 8)")
    _add_narration_arguments(p)
    p.set_defaults(func=cmd_explain)

    p = sub.add_parser(
        "narrate",
        parents=[common],
        help="say an explanation.json in words again (another format, other aspects, or an LLM)",
        description="Render the sentences of an existing explanation.json: templated (default) or by an LLM whose "
        "answer is checked against the scores (falls back to the template when it fails).",
    )
    p.add_argument("explanation", help="an explanation.json written by finexl explain --out")
    p.add_argument("--write", action="store_true", help="store the sentences in the explanation file")
    p.add_argument("--cache", help="cache folder for LLM answers (default $FINEXL_CACHE or ~/.cache/finexl)")
    _add_narration_arguments(p)
    p.set_defaults(func=cmd_narrate)

    bench = sub.add_parser("bench", help="benchmark suites of toy personalizations with known ground truth")
    bench_sub = bench.add_subparsers(dest="bench_command", required=True, metavar="SUBCOMMAND")
    p = bench_sub.add_parser(
        "build",
        parents=[common],
        help="train the LoRAs of a suite (resumable)",
        description="Train every LoRA of a suite with finexl's trainer on toy data shifted by its spec: 'single' "
        "(9 aspects x 5 strength levels, increases and decreases), 'steps' (the same 9 shifts at full strength, "
        "5 levels as snapshots of one slow run at 0.2 ... 1.0 of its steps), 'scale' (one LoRA per shift at the "
        "usual learning rate, sampled at LoRA scales 0.2 ... 1.0), 'null' (8 LoRAs on unshifted data), 'multi' "
        "(mixtures of 2 and 3 aspects at 3 proportions), 'dreambooth' (9 subjects, 'a sks shape'), 'quick' "
        "(a small subset for CI). Finished models are kept; rerunning finishes an interrupted build. About a "
        "minute per model on one CPU core.",
    )
    p.add_argument("suite", choices=list(SUITES), help="which suite")
    p.add_argument("--out", default="suites", help="suites folder; the suite goes to OUT/SUITE (default suites)")
    p.add_argument("--base", help="base pipeline folder (default data/toy_sd)")
    p.add_argument("--n-images", type=int, default=0, help="training images per model (default 800)")
    p.add_argument("--max-steps", type=int, default=0, help="training steps per model (default 400)")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (default: torch's choice)")
    p.set_defaults(func=cmd_bench_build)

    p = bench_sub.add_parser(
        "run",
        parents=[common],
        help="score every method on built suites; prints a Markdown table (method x metric)",
        description="For every model of the suites: sample base and personalized on the same prompts and seeds "
        "(cached), read both with the judge, embed once with the toy CLIP, and explain with every method; then "
        "compute the metrics (see finexl/bench/metrics.py). SUITE may list several, e.g. single,null,multi.",
    )
    p.add_argument("suite", help=f"suite name(s), comma-separated: {', '.join(SUITES)}")
    p.add_argument("--suites", default="suites", help="folder holding the built suites (default suites)")
    p.add_argument("--methods", help="comma-separated methods (default: all)")
    p.add_argument("--samples", type=int, default=128, help="image pairs per model (default 128)")
    p.add_argument("--bootstrap", type=int, default=200, help="bootstrap and null resamples (default 200)")
    p.add_argument("--unpaired", type=int, default=0, help="also compare paired/unpaired intervals on N models")
    p.add_argument(
        "--quick", action="store_true", help="32 pairs and 50 resamples per model (for CI, with suite quick)"
    )
    p.add_argument("--cache", help="image cache folder (default $FINEXL_CACHE or ~/.cache/finexl)")
    p.add_argument("--json", help="write metrics and per-model records to this JSON file")
    p.add_argument("--labels", help="export the suites' ground truth as a JSONL label file")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (default: torch's choice)")
    p.set_defaults(func=cmd_bench_run)

    p = bench_sub.add_parser(
        "compare",
        parents=[common],
        help="how sure the table's ordering is: finexl against every other method, paired bootstrap over models",
        description="Read the records of a `finexl bench run --json` file and resample its units (single-aspect "
        "families, mixtures, nulls, DreamBooth subjects) with replacement, scoring every method on the same "
        "resamples. For each metric: the reference method's value with a percentile interval, the best other method "
        "and the difference to it with its interval, and the methods the reference is significantly worse or better "
        "than (the difference's interval excludes 0; per pair, not corrected for the number of pairs).",
    )
    p.add_argument("results", help="JSON written by `finexl bench run --json`")
    p.add_argument("--reference", default="finexl", help="the method compared with the others (default finexl)")
    p.add_argument("--resamples", type=int, default=2000, help="bootstrap resamples (default 2000)")
    p.add_argument("--seed", type=int, default=0, help="seed of the resampling (default 0)")
    p.add_argument("--level", type=float, default=0.95, help="confidence level of the intervals (default 0.95)")
    p.add_argument("--json", help="write the comparison to this JSON file")
    p.set_defaults(func=cmd_bench_compare)

    p = bench_sub.add_parser(
        "score",
        parents=[common],
        help="score explanations against a JSONL label file (human labels)",
        description="Each line of LABELS: {model, aspect, direction (increase|decrease|none), level 0-3, text}. "
        "EXPLANATIONS are explanation.json files or folders holding one; the model id is the folder name.",
    )
    p.add_argument("labels", help="JSONL label file")
    p.add_argument("explanations", nargs="+", help="explanation.json files or their folders")
    p.set_defaults(func=cmd_bench_score)

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
    _add_train_arguments(p)
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
    p.add_argument("--prior-loss-weight", type=float, default=1.0, help="weight of the prior loss (default 1.0)")
    p.add_argument("--num-class-images", type=int, default=100, help="class images to use (default 100)")
    p.add_argument("--class-data", help="class image folder (default: OUT-class-images beside OUT)")
    p.add_argument("--mode", choices=("lora", "full"), default="lora", help="LoRA or full UNet (default lora)")
    _add_train_arguments(p)
    p.set_defaults(func=cmd_train_dreambooth)

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
    p.add_argument(
        "--snapshots",
        metavar="STEPS",
        help="also train the default toy LoRA on the data set and keep LoRA snapshots at these step counts as "
        "levels of the personalization, e.g. 50,100,200,400 (OUT/lora/snapshots/step-NNNNNN/)",
    )
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads for --snapshots (default: torch's)")
    p.add_argument("--out", required=True, help="output folder (must be new or empty unless --overwrite)")
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty output folder")
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
    p.add_argument("--base", help="base pipeline folder (default data/toy_sd)")
    p.add_argument("--scale", type=float, default=1.0, help="LoRA strength (default 1.0)")
    p.add_argument("--judge", help="judge folder (default data/toy_judge)")
    p.add_argument("--n", type=int, default=256, help="images per model (default 256)")
    p.add_argument("--seed", type=int, default=0, help="seed of the first image (default 0)")
    p.add_argument("--steps", type=int, default=25, help="sampler steps (default 25)")
    p.add_argument("--guidance-scale", type=float, default=4.0, help="classifier-free guidance (default 4.0)")
    p.add_argument("--json", help="write the measurement to this JSON file")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (default: torch's choice)")
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
