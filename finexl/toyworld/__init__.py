"""The toy world: procedurally rendered images with known aspects, and the small models trained on it.

Modules, in the order of the data flow:
    aspects    what an image can vary in, and the words for each value
    render     aspect values -> pixels (deterministic for a seed)
    captions   aspect values -> a caption naming a random subset of them
    dataset    rendered sets with captions and exact labels
    tokenizer  an offline CLIP tokenizer for the toy vocabulary
    clip       the toy CLIP (transformers CLIPModel)
    diffusion  the toy text-to-image pipeline (diffusers StableDiffusionPipeline) and its VAE
    judge      the supervised aspect reader: the toy world's ground truth
    evaluate   measured quality of the three models
"""

from finexl.toyworld.aspects import ASPECT_NAMES, CATEGORICAL, GRADED, AspectError, Aspects, sample_aspects
from finexl.toyworld.render import render

__all__ = ["ASPECT_NAMES", "CATEGORICAL", "GRADED", "AspectError", "Aspects", "render", "sample_aspects"]
