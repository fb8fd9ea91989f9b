"""Random-weight real architectures as fixtures: the CLIP ViT-L/14 folder the GPU benchmark explains with."""

import numpy as np

from finexl.explanation.embed import load_embedder
from finexl.testing.architectures import CLIP_MEAN, VIT_L_14, build_clip


def test_build_clip_writes_a_folder_finexl_embeds_with_at_the_published_preprocessing(tmp_path):
    folder = build_clip(tmp_path / "clip", width=1 / 16, text_layers=1)
    embedder = load_embedder(str(folder))
    images = np.random.default_rng(0).integers(0, 256, (3, 300, 260, 3), dtype=np.uint8)
    features = embedder.embed_images(images)
    width = embedder.model.config.projection_dim
    assert features.shape == (3, width) and np.allclose(np.linalg.norm(features, axis=1), 1.0)
    assert embedder.embed_texts(["a red car", "a dog"]).shape == (2, width)
    assert embedder.text_window == 77  # CLIP's text window
    # ViT-L/14's patches and input size, CLIP's normalization: any image becomes 224 x 224 pixels
    vision = embedder.model.config.vision_config
    assert (vision.patch_size, vision.image_size) == (VIT_L_14["patch_size"], 224)
    pixels = embedder.processor(images=list(images), return_tensors="pt").pixel_values
    assert tuple(pixels.shape) == (3, 3, 224, 224)
    assert list(embedder.processor.image_mean) == CLIP_MEAN
