"""The interface every CLIP backend implements (:class:`Embedder`): L2-normalized float64 image and text embeddings
computed in batches. The backends: :class:`finexl.explanation.embed.TransformersCLIP` and, with the open_clip extra,
:class:`finexl.explanation.open_clip_backend.OpenCLIP`.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from finexl.errors import NumericalError


class Embedder:
    """CLIP-style encoders: ``embed_images`` and ``embed_texts`` return L2-normalized (n, d) float64 arrays."""

    name: str = ""
    fingerprint: str = ""  # identifies the weights, for caches
    batch_size: int = 256
    text_window: int | None = None  # tokens the text encoder reads; longer texts are cut

    def count_tokens(self, text: str) -> int | None:
        """Tokens of ``text`` as the text encoder sees them (with its start and end tokens); None if unknown."""
        return None

    def embed_images(self, images: np.ndarray) -> np.ndarray:
        """``images``: uint8 (n, h, w, 3)."""
        images = np.asarray(images)
        if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
            raise ValueError(f"expected uint8 images of shape (n, h, w, 3), got {images.dtype} {images.shape}")
        if len(images) == 0:
            raise ValueError("no images to embed")
        out = [self._images(images[i : i + self.batch_size]) for i in range(0, len(images), self.batch_size)]
        return normalized_features(torch.cat(out))

    def embed_texts(self, texts: list[str]) -> np.ndarray:
        texts = list(texts)
        if not texts:
            raise ValueError("no texts to embed")
        out = [self._texts(texts[i : i + self.batch_size]) for i in range(0, len(texts), self.batch_size)]
        return normalized_features(torch.cat(out))

    def _images(self, images: np.ndarray) -> torch.Tensor:
        raise NotImplementedError

    def pixel_features(self, pixels: torch.Tensor) -> torch.Tensor:
        """Image features (not normalized) of float pixels ``(n, 3, h, w)`` in ``[0, 1]``, differentiable: the
        model's own preprocessing done in torch, so that gradients reach the pixels (used by the change maps)."""
        raise NotImplementedError(f"{type(self).__name__} has no differentiable image path")

    def _texts(self, texts: list[str]) -> torch.Tensor:
        raise NotImplementedError


def normalized_features(features: torch.Tensor) -> np.ndarray:
    """L2-normalized float64 rows; NaN or infinite features are an error."""
    features = features.float()
    if not torch.isfinite(features).all():
        raise NumericalError("the CLIP model produced NaN or infinite embeddings")
    return F.normalize(features, dim=-1).double().numpy()
