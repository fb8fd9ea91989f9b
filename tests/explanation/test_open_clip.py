"""The open_clip backend on a tiny random open_clip model saved to a local checkpoint (needs the extra)."""

import json
import os

import numpy as np
import pytest

import finexl  # noqa: F401  (first: its torchvision fix, finexl/compat.py, must run before open_clip imports it)

if os.environ.get("FINEXL_REQUIRE_OPEN_CLIP"):  # CI's environment with the extra: a skip would hide a broken install
    import open_clip
else:
    open_clip = pytest.importorskip("open_clip", reason="open_clip is an optional extra")


@pytest.fixture(scope="module")
def tiny_open_clip(tmp_path_factory):
    import torch

    path = tmp_path_factory.mktemp("open_clip")
    config = {
        "embed_dim": 16,
        "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 8, "head_width": 16},
        "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
    }
    (path / "finexl-tiny-test.json").write_text(json.dumps(config))
    open_clip.add_model_config(path / "finexl-tiny-test.json")
    torch.manual_seed(0)
    model = open_clip.create_model("finexl-tiny-test")
    torch.save(model.state_dict(), path / "tiny.pt")
    return path


def test_open_clip_backend_embeds_from_a_local_checkpoint(tiny_open_clip):
    from finexl.explanation.embed import load_embedder
    from finexl.toyworld.dataset import render_set

    spec = f"open_clip:{tiny_open_clip / 'finexl-tiny-test.json'}:{tiny_open_clip / 'tiny.pt'}"
    emb = load_embedder(spec, device="cpu")
    images = render_set(4, seed=0).images
    a = emb.embed_images(images)
    assert a.shape == (4, 16)
    np.testing.assert_allclose(np.linalg.norm(a, axis=1), 1.0, atol=1e-6)
    np.testing.assert_allclose(a, load_embedder(spec, device="cpu").embed_images(images), atol=1e-6)
    t = emb.embed_texts(["a red shape", "a blue shape"])
    assert t.shape == (2, 16) and not np.allclose(t[0], t[1])


def test_missing_open_clip_checkpoint_is_named(tiny_open_clip):
    from finexl.explanation.embed import load_embedder

    with pytest.raises(FileNotFoundError, match="checkpoint"):
        load_embedder(f"open_clip:{tiny_open_clip / 'finexl-tiny-test.json'}:{tiny_open_clip / 'nope.pt'}")
