"""Time finexl's LoRA training step against a minimal plain diffusers + peft loop, side by side in one run.

Both train the same LoRA (same rank, alpha, finexl's default target modules, AdamW) on the same pipeline, data,
batch size and precision; finexl runs with its defaults otherwise (caption dropout 0.2). The plain loop is what
diffusers' example scripts do each step: encode the batch with the VAE and the text encoder, noise, predict,
backward, step. Each variant runs in its own process (so its peak memory is its own), alternating, ``--rounds``
times; the report gives the median steps/s of each, their ratio, and peak memory (resident set size on CPU,
``torch.cuda.max_memory_allocated`` on CUDA).

    python scripts/bench_train.py                 # toy pipeline, batch 16, fp32, 2 rounds
    python scripts/bench_train.py --precision bf16 --batch-size 32
"""

from __future__ import annotations

import argparse
import json
import logging
import resource
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch


def plain_loop(pipe, images, captions, args, device) -> list[float]:
    """The minimal diffusers + peft LoRA loop; returns the wall time of each step."""
    import torch.nn.functional as F
    from diffusers import DDPMScheduler
    from peft import LoraConfig

    from finexl.train.trainer import DEFAULT_TARGET_MODULES
    from finexl.utils import images_to_tensor

    dtype = {"no": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[args.precision]
    unet, vae, text_encoder, tokenizer = pipe.unet, pipe.vae, pipe.text_encoder, pipe.tokenizer
    for m in (unet, vae, text_encoder):
        m.requires_grad_(False)
        m.to(device, dtype=dtype)
    unet.add_adapter(LoraConfig(r=args.rank, lora_alpha=args.rank, init_lora_weights="gaussian",
                                target_modules=list(DEFAULT_TARGET_MODULES)))  # fmt: skip
    params = [p for p in unet.parameters() if p.requires_grad]
    for p in params:
        p.data = p.data.float()
    opt = torch.optim.AdamW(params, lr=1e-3, weight_decay=1e-2)
    scheduler = DDPMScheduler.from_config(pipe.scheduler.config)
    pixels_all = images_to_tensor(images)
    rng = np.random.default_rng(0)
    times = []
    for _ in range(args.warmup + args.steps):
        t0 = time.perf_counter()
        idx = rng.choice(len(images), size=args.batch_size, replace=False)
        pixels = pixels_all[idx].to(device, dtype)
        with torch.no_grad():
            latents = vae.encode(pixels).latent_dist.sample() * vae.config.scaling_factor
            ids = tokenizer([captions[i] for i in idx], padding="max_length", truncation=True,
                            max_length=tokenizer.model_max_length, return_tensors="pt").input_ids  # fmt: skip
            cond = text_encoder(ids.to(device))[0]
        latents = latents.float()
        noise = torch.randn_like(latents)
        t = torch.randint(0, scheduler.config.num_train_timesteps, (len(idx),), device=device)
        noisy = scheduler.add_noise(latents, noise, t)
        with torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
            pred = unet(noisy, t, encoder_hidden_states=cond).sample
        target = (
            scheduler.get_velocity(latents, noise, t) if scheduler.config.prediction_type == "v_prediction" else noise
        )
        loss = F.mse_loss(pred.float(), target.float())
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return times


def finexl_loop(pipe, images, captions, args, device) -> list[float]:
    from finexl.train.data import ImageSet
    from finexl.train.trainer import TrainConfig, train

    cfg = TrainConfig(rank=args.rank, alpha=float(args.rank), batch_size=args.batch_size,
                      max_steps=args.warmup + args.steps, mixed_precision=args.precision, lr_scheduler="constant",
                      lr_warmup_steps=0)  # fmt: skip
    with tempfile.TemporaryDirectory() as out:
        result = train(pipe, ImageSet(images, captions, [""] * len(images)), cfg, out, device=device, progress=False)
    return result.step_seconds


def run_variant(args) -> dict:
    from finexl.loading import load_pipeline
    from finexl.toyworld.personalization import parse_spec, render_personalization

    torch.set_num_threads(args.threads)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    data = render_personalization(parse_spec("colour=red@0.8"), args.n_images, seed=0, size=32)
    pipe = load_pipeline(args.base)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    loop = plain_loop if args.variant == "plain" else finexl_loop
    times = loop(pipe, data.images, data.captions, args, device)
    measured = times[args.warmup :]
    return {
        "variant": args.variant,
        "steps_per_s": len(measured) / sum(measured),
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "peak_cuda_mib": torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda" else None,
        "device": str(device),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base", help="pipeline folder (default: the toy pipeline)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--rank", type=int, default=4)
    parser.add_argument("--precision", choices=("no", "fp16", "bf16"), default="no")
    parser.add_argument("--steps", type=int, default=60, help="timed steps per variant")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps first")
    parser.add_argument("--rounds", type=int, default=2, help="alternating runs of each variant")
    parser.add_argument("--n-images", type=int, default=200)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", help="write the results here")
    parser.add_argument("--variant", choices=("plain", "finexl"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    if args.variant:
        print(json.dumps(run_variant(args)))
        return
    passed = ["--batch-size", str(args.batch_size), "--rank", str(args.rank), "--precision", args.precision,
              "--steps", str(args.steps), "--warmup", str(args.warmup), "--n-images", str(args.n_images),
              "--threads", str(args.threads)] + (["--base", args.base] if args.base else [])  # fmt: skip
    results: dict[str, list[dict]] = {"plain": [], "finexl": []}
    for r in range(args.rounds):
        for variant in ("plain", "finexl"):
            proc = subprocess.run([sys.executable, __file__, *passed, "--variant", variant], capture_output=True,
                                  text=True, check=True)  # fmt: skip
            results[variant].append(json.loads(proc.stdout.strip().splitlines()[-1]))
            print(f"round {r + 1} {variant:<6} {results[variant][-1]['steps_per_s']:.2f} steps/s", flush=True)
    summary = {
        v: {
            "steps_per_s": float(np.median([x["steps_per_s"] for x in rs])),
            "peak_rss_mib": float(max(x["peak_rss_mib"] for x in rs)),
            "peak_cuda_mib": rs[0]["peak_cuda_mib"],
        }
        for v, rs in results.items()
    }
    ratio = summary["finexl"]["steps_per_s"] / summary["plain"]["steps_per_s"]
    device = results["plain"][0]["device"]
    print(f"\nbatch {args.batch_size}, precision {args.precision}, {args.threads} thread(s), device {device}")
    print(f"{'loop':<8} {'steps/s':>8} {'peak RSS MiB':>13} {'peak CUDA MiB':>14}")
    for v, s in summary.items():
        cuda = f"{s['peak_cuda_mib']:.0f}" if s["peak_cuda_mib"] is not None else "-"
        print(f"{v:<8} {s['steps_per_s']:8.2f} {s['peak_rss_mib']:13.0f} {cuda:>14}")
    print(f"ratio finexl / plain: {ratio:.2f}x steps/s")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump({"args": vars(args), "rounds": results, "summary": summary, "ratio": ratio}, f, indent=2)


if __name__ == "__main__":
    main()
