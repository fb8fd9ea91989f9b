"""Real-size explaining speed on one accelerator: SD 1.5 or SDXL and CLIP ViT-L/14, random weights (speed only).

    python scripts/bench_gpu.py --kind sd15 --device cuda --dtype bfloat16 --batches 16,32,64 --json FILE
    python scripts/bench_gpu.py --kind sdxl --device cuda --dtype bfloat16 --batches 8,16 --json FILE
    python scripts/bench_gpu.py --kind sd15 --device cuda --dtype bfloat16 --batches 32 --compile --json FILE
    python scripts/bench_gpu.py --kind sd15 --device cpu --dtype float32 --flops-only --json FILE  # FLOPs only
    # a dry run of every part on this CPU, at toy sizes:
    python scripts/bench_gpu.py --kind sd15 --device cpu --dtype float32 --width 0.0625 --size 64 --images 8 \
        --batches 4 --explain --json /tmp/dry.json

In one process, printed and kept with ``--json``:

1. matmul throughput: a square ``--gemm`` matmul in the dtype, the roofline the rest is compared with;
2. the denoiser's FLOPs per image per sampler step (classifier-free guidance: two UNet rows), the VAE decode's and
   the CLIP image embedding's per image, counted by ``torch.utils.flop_counter`` on one forward each, and the
   embedding's share of an image's work (the most that overlapping generation with embedding could hide);
   ``--flops-only`` stops here, so it runs at full size on a CPU;
3. per batch size: ``--images`` images through finexl's sampler (explain's default: UniPC, ``--steps`` 10) and
   finexl's CLIP embedder: images/s of generation, of embedding and end to end, peak accelerator memory, and the
   fraction of the roofline the sampling reaches (FLOPs per image x images/s over the matmul throughput); with
   ``--compile`` the denoiser is compiled first (each batch size's warm-up, timed as ``warm_up_s``, waits for it);
4. with ``--explain``: a whole cold ``finexl explain`` (its defaults but the device and dtype) of a random LoRA on
   the saved random base, and again at 128 fixed pairs: seconds, pairs used and the explanation's own timings.

Random weights stand in for speed and memory only; what the explanation says of them means nothing.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

PROMPTS = ["a photo of a red car", "a dog on a beach", "a bowl of fruit on a table", "a city street at night"]


def sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def peak_memory_mb(device) -> float | None:
    import torch

    return torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None


def matmul_tflops(n: int, dtype, device, repeats: int = 10) -> float:
    import torch

    a = torch.randn(n, n, dtype=dtype, device=device)
    b = torch.randn(n, n, dtype=dtype, device=device)
    a @ b  # warm-up
    sync(device)
    t = time.perf_counter()
    for _ in range(repeats):
        a @ b
    sync(device)
    return 2 * n**3 * repeats / (time.perf_counter() - t) / 1e12


def denoiser_flops_per_image_step(pipe, size: int, device, dtype) -> float:
    """One sampler step of one image: the UNet on the conditional and unconditional rows."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    unet = pipe.unet
    latent = size // pipe.vae_scale_factor
    x = torch.randn(2, unet.config.in_channels, latent, latent, device=device, dtype=dtype)
    context = torch.randn(2, 77, unet.config.cross_attention_dim, device=device, dtype=dtype)
    extra = {}
    if unet.config.addition_embed_type == "text_time":
        pooled = pipe.text_encoder_2.config.projection_dim
        extra = {"added_cond_kwargs": {"text_embeds": torch.randn(2, pooled, device=device, dtype=dtype),
                                       "time_ids": torch.randn(2, 6, device=device, dtype=dtype)}}  # fmt: skip
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        unet(x, torch.tensor([500, 500], device=device), encoder_hidden_states=context, **extra)
    return float(counter.get_total_flops())


def image_flops(pipe, embedder, size: int, device, dtype) -> dict:
    """FLOPs per image of the other parts: the VAE decode, and the CLIP image embedding (at its own 224 px input,
    float32 as finexl embeds); what overlapping generation with embedding could hide at most is the latter's
    share."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    latent = torch.randn(1, pipe.vae.config.latent_channels, size // pipe.vae_scale_factor,
                         size // pipe.vae_scale_factor, device=device, dtype=dtype)  # fmt: skip
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        pipe.vae.decode(latent)
    decode = float(counter.get_total_flops())
    pixels = torch.rand(1, 3, 224, 224, device=device)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        embedder.model.get_image_features(pixel_values=pixels)
    return {"vae_decode_gflops_per_image": decode / 1e9, "clip_gflops_per_image": counter.get_total_flops() / 1e9}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kind", choices=["sd15", "sdxl"], default="sd15")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--dtype", default="bfloat16", choices=["float32", "float16", "bfloat16"])
    parser.add_argument("--width", type=float, default=1.0, help="fraction of the published widths (1: full size)")
    parser.add_argument("--size", type=int, help="image size (default 512 for SD 1.5, 1024 for SDXL)")
    parser.add_argument("--images", type=int, default=128, help="images per batch-size measurement")
    parser.add_argument("--batches", default="16,32,64", help="comma-separated batch sizes")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--gemm", type=int, default=8192, help="side of the matmul for the roofline")
    parser.add_argument("--explain", action="store_true", help="also time whole cold explanations")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--compile", action="store_true", help="torch.compile the denoiser, as explain --compile")
    parser.add_argument(
        "--flops-only",
        action="store_true",
        help="count the FLOPs of each part only (no timing): runs on a CPU at full size",
    )
    parser.add_argument("--json")
    args = parser.parse_args()

    import numpy as np
    import torch

    from finexl.explanation.embed import load_embedder
    from finexl.loading import torch_dtype
    from finexl.sampling import SamplerConfig, sample_images
    from finexl.testing.architectures import build_clip, build_pipeline, n_parameters

    if args.threads:
        torch.set_num_threads(args.threads)
    device, dtype = torch.device(args.device), torch_dtype(args.dtype)
    size = args.size or (512 if args.kind == "sd15" else 1024)
    record: dict = {"kind": args.kind, "device": str(device), "dtype": args.dtype, "width": args.width, "size": size,
                    "steps": args.steps, "scheduler": "unipc", "images": args.images,
                    "compile": args.compile}  # fmt: skip
    if device.type == "cuda":
        record["device_name"] = torch.cuda.get_device_name(device)
    work = Path(tempfile.mkdtemp(prefix="bench_gpu-"))

    # 1. the roofline
    if not args.flops_only:
        record["matmul_tflops"] = matmul_tflops(args.gemm, dtype, device)
        print(f"matmul {args.gemm}^3 in {args.dtype}: {record['matmul_tflops']:.1f} TFLOP/s", flush=True)

    # 2. the models, and the denoiser's FLOPs per image per step
    t = time.perf_counter()
    pipe = build_pipeline(args.kind, width=args.width).to(device, dtype)
    pipe.set_progress_bar_config(disable=True)
    clip_dir = build_clip(work / "clip", width=args.width)
    embedder = load_embedder(str(clip_dir), device=args.device)  # float32, as finexl embeds
    record["build_s"] = time.perf_counter() - t
    record["unet_parameters"] = n_parameters(pipe.unet)
    flops = denoiser_flops_per_image_step(pipe, size, device, dtype)
    record["unet_gflops_per_image_step"] = flops / 1e9
    print(f"{args.kind} UNet {record['unet_parameters'] / 1e6:.0f} M parameters, {flops / 1e9:.4g} GFLOPs per image "
          f"per step (guidance included) at {size} px", flush=True)  # fmt: skip
    record.update(image_flops(pipe, embedder, size, device, dtype))
    sampling = flops * args.steps / 1e9 + record["vae_decode_gflops_per_image"]
    record["clip_share_of_flops"] = record["clip_gflops_per_image"] / (sampling + record["clip_gflops_per_image"])
    print(f"per image: sampling {sampling:.4g} GFLOPs ({args.steps} steps and the VAE decode, "
          f"{record['vae_decode_gflops_per_image']:.4g}), CLIP image embedding {record['clip_gflops_per_image']:.4g} "
          f"GFLOPs: {100 * record['clip_share_of_flops']:.2f} % of the work", flush=True)  # fmt: skip
    if args.flops_only:
        if args.json:
            Path(args.json).write_text(json.dumps(record, indent=1) + "\n")
        return 0

    # 3. sampling and embedding, per batch size
    if args.compile:
        from finexl.loading import denoiser

        denoiser(pipe).requires_grad_(False).compile(dynamic=False)  # as load_pipeline(compile=True) does
    rows = []
    for batch in (int(b) for b in args.batches.split(",")):
        sampler = SamplerConfig(num_inference_steps=args.steps, scheduler="unipc", height=size, width=size,
                                batch_size=batch)  # fmt: skip
        prompts = [PROMPTS[i % len(PROMPTS)] for i in range(args.images)]
        seeds = list(range(args.images))
        t = time.perf_counter()
        sample_images(pipe, prompts[:batch], seeds[:batch], sampler, progress=False)  # warm-up (and compile)
        sync(device)
        warm_up_s = time.perf_counter() - t
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        sync(device)
        t = time.perf_counter()
        images = sample_images(pipe, prompts, seeds, sampler, progress=False)
        sync(device)
        generate_s = time.perf_counter() - t
        t = time.perf_counter()
        embedder.embed_images(np.asarray(images))
        sync(device)
        embed_s = time.perf_counter() - t
        row = {
            "batch": batch,
            "warm_up_s": warm_up_s,
            "generate_s": generate_s,
            "embed_s": embed_s,
            "generate_images_per_s": args.images / generate_s,
            "embed_images_per_s": args.images / embed_s,
            "images_per_s": args.images / (generate_s + embed_s),
            "peak_memory_mb": peak_memory_mb(device),
            "roofline_fraction": flops * args.steps * args.images / generate_s / (record["matmul_tflops"] * 1e12),
        }
        rows.append(row)
        memory = f"{row['peak_memory_mb']:.0f} MB" if row["peak_memory_mb"] is not None else "n/a"
        print(f"batch {batch}: generate {row['generate_images_per_s']:.2f} images/s, embed "
              f"{row['embed_images_per_s']:.1f} images/s, end to end {row['images_per_s']:.2f} images/s, peak "
              f"{memory}, {100 * row['roofline_fraction']:.0f} % of the matmul roofline", flush=True)  # fmt: skip
    record["batches"] = rows

    # 4. whole cold explanations on the saved base
    if args.explain:
        from safetensors.torch import save_file

        from finexl.explanation.pipeline import ExplainConfig, ExplainPipeline
        from finexl.testing.architectures import kohya_lora_state_dict

        best = max(rows, key=lambda r: r["images_per_s"])["batch"]
        base = work / "base"
        pipe.to(torch.float32).save_pretrained(base)
        lora = kohya_lora_state_dict(pipe.unet, rank=8, alpha=8.0, seed=1, std=0.05)
        save_file(lora, str(work / "lora.safetensors"))
        del pipe
        (work / "prompts.txt").write_text("\n".join(PROMPTS) + "\n")
        record["explain"] = {}
        for name, samples in (("default (samples auto)", "auto"), ("128 fixed pairs", 128)):
            config = ExplainConfig(base=str(base), clip=str(clip_dir), concepts="real", samples=samples,
                                   prompts=str(work / "prompts.txt"), device=args.device, dtype=args.dtype,
                                   height=size, width=size, cache_dir=str(work / f"cache-{samples}"),
                                   report_pairs=0, compile=args.compile)  # fmt: skip
            config.sampler.batch_size = best
            t = time.perf_counter()
            explanation = ExplainPipeline(config)(lora=str(work / "lora.safetensors"))
            sync(device)
            seconds = time.perf_counter() - t
            record["explain"][name] = {"seconds": seconds, "pairs": explanation.divergence["n_pairs"],
                                       "inside": explanation.seconds,
                                       "peak_memory_mb": peak_memory_mb(device)}  # fmt: skip
            print(f"cold explain, {name}: {seconds:.1f} s, {explanation.divergence['n_pairs']} pairs, batch {best}",
                  flush=True)  # fmt: skip
    if args.json:
        Path(args.json).write_text(json.dumps(record, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
