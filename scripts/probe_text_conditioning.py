"""How far a pipeline's text encoder and UNet tell apart prompts that differ in one aspect value.

    python scripts/probe_text_conditioning.py --pipeline data/toy_sd

For each pair of prompts it prints the relative difference of the text encoder's hidden states,
||h(a) - h(b)|| / ||h(a)||, and of the UNet's prediction on the same noisy latents at three timesteps. A pair whose
UNet difference is near 0 is a pair the pipeline cannot draw differently, whatever the sampler does. This is how the
collapse of the position and pose words in the stage-4 text encoder was found (README, Known problems).
"""

import argparse

import torch

from finexl.toyworld.diffusion import load_toy_pipeline
from finexl.utils import encode_prompts

PAIRS = (
    ("a shape on the left", "a shape on the right"),
    ("a shape at the top", "a shape at the bottom"),
    ("a shape turned left", "a shape turned right"),
    ("a shape upright", "a shape upside-down"),
    ("a red shape", "a blue shape"),
    ("a heart", "a moon"),
    ("a shape on a striped background", "a shape on a dotted background"),
)
TIMESTEPS = (900, 600, 300)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pipeline", default=None, help="pipeline folder (default: the shipped toy pipeline)")
    parser.add_argument("--n", type=int, default=16, help="noisy latents per timestep")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    pipe = load_toy_pipeline(args.pipeline)
    unet = pipe.unet
    size = unet.config.sample_size
    gen = torch.Generator().manual_seed(args.seed)
    latents = torch.randn(args.n, unet.config.in_channels, size, size, generator=gen)
    print(f"{'prompt a':<34} {'prompt b':<34} {'text':>6}  " + "  ".join(f"unet t={t:<4}" for t in TIMESTEPS))
    with torch.no_grad():
        for a, b in PAIRS:
            ha, hb = encode_prompts(pipe.text_encoder, pipe.tokenizer, [a, b])
            text = float((ha - hb).norm() / ha.norm())
            cells = []
            for t in TIMESTEPS:
                steps = torch.full((args.n,), t)
                pa = unet(latents, steps, encoder_hidden_states=ha.expand(args.n, -1, -1)).sample
                pb = unet(latents, steps, encoder_hidden_states=hb.expand(args.n, -1, -1)).sample
                cells.append(float((pa - pb).norm() / pa.norm()))
            print(f"{a:<34} {b:<34} {text:6.3f}  " + "  ".join(f"{c:10.3f}" for c in cells))


if __name__ == "__main__":
    main()
