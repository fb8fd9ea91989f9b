"""Sampling speed of a stack of LoRAs: adapters left unfused (diffusers' set_adapters weights) against fused.

    python scripts/bench_stack.py --lora toy:red --lora toy:darker --images 32 --threads 2

Both ways start from the same base pipeline and the same LoRAs at the same weights, and sample the same prompts and
seeds; the script prints the seconds of each (after one warm-up batch) and their ratio, measured side by side in one
run, and the largest pixel difference between the two ways' images.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from finexl.loading import fuse_lora, load_lora, load_pipeline
from finexl.presets import get_preset
from finexl.sampling import SamplerConfig, sample_images


def run(loras: list[str], scales: list[float], fuse: bool, prompts: list[str], seeds: list[int], cfg) -> tuple:
    pipe = load_pipeline()
    names = [
        load_lora(pipe, f, scale=s, adapter_name=f"a{k}") for k, (f, s) in enumerate(zip(loras, scales, strict=True))
    ]
    pipe.set_adapters(names, adapter_weights=scales)
    if fuse:
        fuse_lora(pipe, names, keep_tuned=False)
    sample_images(pipe, prompts[:4], seeds[:4], cfg)  # warm-up
    t = time.perf_counter()
    images = sample_images(pipe, prompts, seeds, cfg)
    return time.perf_counter() - t, images


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lora", action="append", required=True)
    ap.add_argument("--scale", type=float, action="append")
    ap.add_argument("--images", type=int, default=32)
    ap.add_argument("--threads", type=int, default=0)
    args = ap.parse_args()
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    scales = args.scale or [1.0] * len(args.lora)
    prompts = [get_preset("toy").prompts[i % len(get_preset("toy").prompts)] for i in range(args.images)]
    seeds = list(range(args.images))
    cfg = SamplerConfig(num_inference_steps=10, scheduler="unipc")
    unfused, a = run(args.lora, scales, False, prompts, seeds, cfg)
    fused, b = run(args.lora, scales, True, prompts, seeds, cfg)
    diff = int(np.abs(np.asarray(a, dtype=int) - np.asarray(b, dtype=int)).max())
    print(f"{args.images} images, {len(args.lora)} LoRAs: unfused adapters {unfused:.1f} s, fused {fused:.1f} s, "
          f"unfused / fused {unfused / fused:.2f}; largest pixel difference {diff}")  # fmt: skip


if __name__ == "__main__":
    main()
