"""The transformers CLIP backend: normalized, batch-independent embeddings; clear errors for bad specs."""

import numpy as np
import pytest

from finexl.explanation.embed import TransformersCLIP, load_embedder
from finexl.toyworld.dataset import render_set


def test_embeddings_are_normalized_and_do_not_depend_on_batching(tiny_clip_dir):
    images = render_set(6, seed=0).images
    one = TransformersCLIP(tiny_clip_dir, batch_size=2)
    full = TransformersCLIP(tiny_clip_dir, batch_size=64)
    a, b = one.embed_images(images), full.embed_images(images)
    assert a.shape == (6, 16)
    np.testing.assert_allclose(np.linalg.norm(a, axis=1), 1.0, atol=1e-6)
    np.testing.assert_allclose(a, b, atol=1e-5)
    t = one.embed_texts(["a red shape", "a blue shape", "a red shape"])
    np.testing.assert_allclose(t[0], t[2], atol=1e-6)
    assert not np.allclose(t[0], t[1])


def test_toy_spec_loads_the_shipped_clip_and_matches_its_own_preprocessing():
    from finexl.toyworld.clip import embed_images, load_toy_clip

    images = render_set(4, seed=1).images
    model, _ = load_toy_clip()
    expected = embed_images(model, images).double().numpy()
    np.testing.assert_allclose(load_embedder("toy").embed_images(images), expected, atol=1e-5)


def test_bad_specs_and_inputs_are_named(tmp_path, tiny_clip_dir):
    with pytest.raises(FileNotFoundError, match="no CLIP model"):
        load_embedder(str(tmp_path / "missing"))
    with pytest.raises(ValueError, match="open_clip:MODEL:CHECKPOINT"):
        load_embedder("open_clip:ViT-B-32")
    emb = TransformersCLIP(tiny_clip_dir)
    with pytest.raises(ValueError, match="uint8"):
        emb.embed_images(np.zeros((2, 32, 32, 3), dtype=np.float32))
    with pytest.raises(ValueError, match="no texts"):
        emb.embed_texts([])
