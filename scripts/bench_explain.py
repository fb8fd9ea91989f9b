"""Speed of explaining, side by side in one run, each measurement in a fresh process.

    python scripts/bench_explain.py [--images 64] [--old 2a37b46] [--threads 2] [--json FILE]

1. Sample and embed ``--images`` images of the toy base (the toy preset's prompts cycled, seeds 0..n-1, 25 steps,
   guidance 7.5, 32 px), two ways: finexl's (`finexl.sampling.sample_images` in batches, then
   `Embedder.embed_images` in batches) and the plain way (the diffusers pipeline called prompt by prompt with its
   defaults, then the transformers CLIP image by image). Timed from loading the models to the last embedding.
2. A cold `finexl explain --lora data/toy_loras/red` (empty cache, with `--out`, this commit's defaults) at this
   commit and at ``--old`` (a `git worktree` of that commit, run with the same interpreter and packages), with their
   CHANGED aspects; ``--head-args`` adds flags to this commit's run (e.g. ``"--samples 128 --scheduler default
   --steps 25"`` for the old defaults).
3. ``--compile`` against eager, each in a fresh process with an empty image cache: the same cold explain, and a
   `finexl explain-many` of four models (the shipped red and darker LoRAs at strengths 1 and 0.5, no reports);
   compiled first with torch's compile cache empty (a fresh ``TORCHINDUCTOR_CACHE_DIR``), then with it warm.
4. With ``--sd15 1,2`` (``--sdxl 1``): SD 1.5 (SDXL) at its published size with random weights
   (`finexl.testing.architectures`; speed only, never results), 512 px (1024 px), each batch size in a fresh process:
   seconds per sampler step (classifier-free guidance included) and per VAE decode, per image, and the process's
   peak memory; then the extrapolated cost of an explanation on this CPU.

Prints images/s, seconds, peak memory (each process's own maximum resident set) and the ratios; ``--json`` keeps them.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def child(way: str, n: int, steps: int, threads: int) -> dict:
    import numpy as np
    import torch

    torch.set_num_threads(threads)
    from finexl.presets import get_preset

    preset = get_preset("toy")
    prompts = [preset.prompts[i % len(preset.prompts)] for i in range(n)]
    seeds = list(range(n))
    t0 = time.perf_counter()
    if way == "finexl":
        from finexl.explanation.embed import load_embedder
        from finexl.loading import load_pipeline
        from finexl.sampling import SamplerConfig, sample_images

        pipe = load_pipeline(preset.base)
        embedder = load_embedder(preset.clip)
        t_load = time.perf_counter()
        images = sample_images(pipe, prompts, seeds, SamplerConfig(num_inference_steps=steps))
        t_gen = time.perf_counter()
        embedder.embed_images(images)
    else:
        from diffusers import DiffusionPipeline
        from transformers import CLIPImageProcessor, CLIPModel

        from finexl.utils import data_dir

        pipe = DiffusionPipeline.from_pretrained(preset.base)
        pipe.set_progress_bar_config(disable=True)
        clip = CLIPModel.from_pretrained(data_dir() / "toy_clip").eval()
        processor = CLIPImageProcessor.from_pretrained(data_dir() / "toy_clip")
        t_load = time.perf_counter()
        images = []
        for prompt, seed in zip(prompts, seeds, strict=True):
            generator = torch.Generator().manual_seed(seed)
            images.append(pipe(prompt, num_inference_steps=steps, guidance_scale=7.5, generator=generator).images[0])
        t_gen = time.perf_counter()
        with torch.no_grad():
            for im in images:
                clip.get_image_features(**processor(images=im, return_tensors="pt"))
        images = np.stack([np.asarray(im) for im in images])
    t_end = time.perf_counter()
    return {"way": way, "images": n, "load_s": t_load - t0, "generate_s": t_gen - t_load, "embed_s": t_end - t_gen,
            "work_s": t_end - t_load, "images_per_s": n / (t_end - t_load),
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}  # fmt: skip


def real_child(kind: str, batch: int, threads: int) -> dict:
    """Full-size random SD 1.5 at 512 px (SDXL at 1024): a pipeline call of 1 and of 3 steps (their difference / 2
    is a step), and the VAE decode alone."""
    import torch

    from finexl.sampling import SamplerConfig, sample_images
    from finexl.testing.architectures import build_pipeline, n_parameters

    torch.set_num_threads(threads)
    t0 = time.perf_counter()
    pipe = build_pipeline(kind, width=1.0)
    pipe.set_progress_bar_config(disable=True)
    build_s = time.perf_counter() - t0
    size = 512 if kind == "sd15" else 1024
    prompts, seeds = ["a photo of a red car"] * batch, list(range(batch))
    seconds = {}
    for steps in (1, 3):
        t = time.perf_counter()
        sample_images(pipe, prompts, seeds, SamplerConfig(num_inference_steps=steps, height=size, width=size,
                                                          batch_size=batch))  # fmt: skip
        seconds[steps] = time.perf_counter() - t
    latents = torch.randn(batch, 4, size // 8, size // 8)
    t = time.perf_counter()
    with torch.no_grad():
        pipe.vae.decode(latents / pipe.vae.config.scaling_factor)
    decode_s = time.perf_counter() - t
    step_s = (seconds[3] - seconds[1]) / 2
    return {"kind": kind, "size": size, "batch": batch, "unet_parameters": n_parameters(pipe.unet), "build_s": build_s,
            "step_s_per_image": step_s / batch, "decode_s_per_image": decode_s / batch,
            "one_step_call_s_per_image": seconds[1] / batch,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}  # fmt: skip


def run_child(way: str, args) -> dict:
    cmd = [sys.executable, __file__, "--child", way, "--images", str(args.images), "--steps", str(args.steps),
           "--threads", str(args.threads)]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, check=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    return json.loads(done.stdout.strip().splitlines()[-1])


def run_finexl(code_root: Path, argv: list[str], env: dict | None = None) -> dict:
    """``finexl ARGV`` in a fresh process from ``code_root`` (its own finexl on PYTHONPATH): wall seconds, seconds
    inside Python (imports included), the process's peak memory."""
    code = (
        "import resource, runpy, sys, time\n"
        f"sys.argv = ['finexl', *{argv!r}]\n"
        "t0 = time.perf_counter()\n"
        "try:\n    runpy.run_module('finexl.cli', run_name='__main__')\nexcept SystemExit as e:\n"
        "    if e.code:\n        raise\n"
        "print(time.perf_counter() - t0, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, file=sys.stderr)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(code_root), "HF_HUB_OFFLINE": "1", **(env or {})}
    t0 = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", code], cwd=code_root, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t0
    if done.returncode != 0:
        sys.exit(f"finexl {' '.join(argv)} at {code_root} failed:\n{done.stderr[-2000:]}")
    inner, rss = map(float, done.stderr.strip().splitlines()[-1].split())
    return {"wall_s": wall, "inside_s": inner, "peak_rss_mb": rss}


def cold_explain(code_root: Path, work: Path, name: str, threads: int, extra: list[str] | None = None,
                 env: dict | None = None) -> dict:  # fmt: skip
    """``finexl explain`` of the red LoRA from ``code_root``, empty cache."""
    out, cache = work / f"out-{name}", work / f"cache-{name}"
    argv = ["explain", "--lora", "data/toy_loras/red", "--cache", str(cache), "--out", str(out), "--threads",
            str(threads), "-q", *(extra or [])]  # fmt: skip
    timing = run_finexl(code_root, argv, env)
    expl = json.loads((out / "explanation.json").read_text())
    return {"code": name, "args": extra or [], **timing, "pairs": expl["divergence"]["n_pairs"],
            "seconds": expl.get("seconds"), "changed": [a["aspect"] for a in expl["aspects"] if a["changed"]],
            "scores": {a["aspect"]: round(a["score"], 4) for a in expl["aspects"]}}  # fmt: skip


# explain-many of the shipped toy LoRAs at two strengths: the case a compiled denoiser is for
MANY = [("red", "red", 1.0), ("red-half", "red", 0.5), ("darker", "darker", 1.0), ("darker-half", "darker", 0.5)]


def many_explain(work: Path, name: str, threads: int, extra: list[str], env: dict | None = None) -> dict:
    """``finexl explain-many`` of :data:`MANY` (no reports), empty image cache."""
    manifest = work / "many.jsonl"
    manifest.write_text("".join(json.dumps({"id": i, "path": str(ROOT / "data" / "toy_loras" / lora), "scale": scale})
                                + "\n" for i, lora, scale in MANY))  # fmt: skip
    out, cache = work / f"many-{name}", work / f"cache-many-{name}"
    argv = ["explain-many", str(manifest), "--out", str(out), "--cache", str(cache), "--no-report", "--report-pairs",
            "0", "--threads", str(threads), "-q", *extra]  # fmt: skip
    timing = run_finexl(ROOT, argv, env)
    models = {i: json.loads((out / "models" / i / "explanation.json").read_text()) for i, _, _ in MANY}
    changed = {i: [a["aspect"] for a in e["aspects"] if a["changed"]] for i, e in models.items()}
    pairs = {i: e["divergence"]["n_pairs"] for i, e in models.items()}
    return {"code": name, "args": extra, **timing, "models": len(models), "pairs": pairs, "changed": changed}


def compiled(args, record: dict) -> None:
    """``--compile`` against eager, side by side: a cold explain, and an explain-many of four models; compiled once
    with torch's compile cache empty (a fresh ``TORCHINDUCTOR_CACHE_DIR``) and once with it warm."""
    work = Path(tempfile.mkdtemp(prefix="bench_compile-"))
    rows = {}
    for kind in ("explain", "explain-many"):
        compile_cache = {"TORCHINDUCTOR_CACHE_DIR": str(work / f"inductor-{kind}")}
        for name, extra, env in (("eager", [], None), ("compiled, empty compile cache", ["--compile"], compile_cache),
                                 ("compiled, warm compile cache", ["--compile"], compile_cache)):  # fmt: skip
            tag = f"{kind}-{len(rows)}"
            if kind == "explain":
                row = cold_explain(ROOT, work, tag, args.threads, extra, env)
            else:
                row = many_explain(work, tag, args.threads, extra, env)
            rows[f"{kind}, {name}"] = row
            pairs = row["pairs"] if kind == "explain" else sum(row["pairs"].values())
            print(f"{kind:<12} {name:<30} {row['wall_s']:6.1f} s, {pairs} pairs, peak {row['peak_rss_mb']:.0f} MB, "
                  f"CHANGED {row['changed']}", flush=True)  # fmt: skip
        eager = rows[f"{kind}, eager"]["wall_s"]
        for name in ("compiled, empty compile cache", "compiled, warm compile cache"):
            print(f"{kind}: {name}: {eager / rows[f'{kind}, {name}']['wall_s']:.2f}x eager")
    record["compile"] = rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=64)
    ap.add_argument("--steps", type=int, default=25)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--old", default="2a37b46", help="the commit to compare the cold explain with")
    ap.add_argument("--json")
    ap.add_argument("--head-args", default="", help="extra flags for this commit's cold explain")
    ap.add_argument("--sd15", help="comma-separated batch sizes for the full-size SD 1.5 timing (e.g. 1,2)")
    ap.add_argument("--sdxl", help="comma-separated batch sizes for the full-size SDXL timing (e.g. 1)")
    ap.add_argument("--skip", default="", help="comma-separated parts to skip: sample, cold, compile")
    ap.add_argument("--child", choices=["finexl", "plain", "sd15", "sdxl"], help=argparse.SUPPRESS)
    ap.add_argument("--batch", type=int, default=1, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child in ("sd15", "sdxl"):
        print(json.dumps(real_child(args.child, args.batch, args.threads)))
        return
    if args.child:
        print(json.dumps(child(args.child, args.images, args.steps, args.threads)))
        return
    skip = set(filter(None, args.skip.split(",")))

    record = {"threads": args.threads, "machine": f"{os.cpu_count()} CPUs", "steps": args.steps}
    if "sample" not in skip:
        ways = {w: run_child(w, args) for w in ("finexl", "plain")}
        record["sample_and_embed"] = ways
        ratio = ways["plain"]["work_s"] / ways["finexl"]["work_s"]
        record["sample_and_embed_speedup"] = ratio
        for w in ways.values():
            print(f"{w['way']:<7} {w['images']} images: generate {w['generate_s']:6.1f} s, embed {w['embed_s']:5.1f} "
                  f"s, {w['images_per_s']:5.2f} images/s, peak {w['peak_rss_mb']:.0f} MB")  # fmt: skip
        print(f"sample + embed: finexl {ratio:.2f}x the plain way (target >= 3)")
    if "cold" not in skip:
        cold(args, record)
    if "compile" not in skip:
        compiled(args, record)
    for kind in ("sd15", "sdxl"):
        if getattr(args, kind):
            real_size(kind, getattr(args, kind), args.threads, record)
    if args.json:
        Path(args.json).write_text(json.dumps(record, indent=1) + "\n")


def real_size(kind: str, batches: str, threads: int, record: dict) -> None:
    rows = []
    for batch in (int(b) for b in batches.split(",")):
        cmd = [sys.executable, __file__, "--child", kind, "--batch", str(batch), "--threads", str(threads)]
        done = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
        if done.returncode != 0:
            print(f"{kind} batch {batch} failed: {done.stderr[-500:]}")
            rows.append({"batch": batch, "failed": done.stderr[-500:]})
            continue
        row = json.loads(done.stdout.strip().splitlines()[-1])
        rows.append(row)
        print(f"{kind} (random, {row['unet_parameters'] / 1e6:.0f} M UNet) {row['size']} px, batch {batch}: "
              f"{row['step_s_per_image']:.2f} s per image per step, decode {row['decode_s_per_image']:.2f} s per "
              f"image, peak {row['peak_rss_mb']:.0f} MB")  # fmt: skip
    ok = [r for r in rows if "failed" not in r]
    if ok:
        best = min(ok, key=lambda r: r["step_s_per_image"])
        per_image = {steps: steps * best["step_s_per_image"] + best["decode_s_per_image"] for steps in (25, 10)}
        record[kind] = {"rows": rows, "seconds_per_image": per_image,
                        "explanation_s": {"384 images at 25 steps": 384 * per_image[25],
                                          "384 images at 10 steps": 384 * per_image[10]}}  # fmt: skip
        print(f"{kind} on this CPU: {per_image[25]:.0f} s per image at 25 steps, {per_image[10]:.0f} s at 10; 384 "
              f"images (128 fixed pairs) at 25 steps: {384 * per_image[25] / 3600:.1f} h")  # fmt: skip


def cold(args, record: dict) -> None:
    work = Path(tempfile.mkdtemp(prefix="bench_explain-"))
    old_tree = work / "old"
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(old_tree), args.old], check=True,
                   capture_output=True)  # fmt: skip
    try:
        new = cold_explain(ROOT, work, "head", args.threads, args.head_args.split())
        old = cold_explain(old_tree, work, args.old, args.threads)
    finally:
        subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(old_tree)], capture_output=True)
    record["cold_explain"] = {"head": new, "old": old, "speedup": old["wall_s"] / new["wall_s"],
                              "same_changed": new["changed"] == old["changed"]}  # fmt: skip
    for r in (new, old):
        print(f"cold explain at {r['code']:<8} {r['wall_s']:6.1f} s, peak {r['peak_rss_mb']:.0f} MB, "
              f"CHANGED {r['changed']}")  # fmt: skip
    print(f"cold explain: {old['wall_s'] / new['wall_s']:.2f}x faster than {args.old} (target >= 2.5); same CHANGED "
          f"aspects: {new['changed'] == old['changed']}")  # fmt: skip


if __name__ == "__main__":
    main()
