"""VLM concept proposals (as in the FineXL paper): a vision-language model looks at base/personalized pairs.

Each pair (same prompt and seed) is shown with an instruction to list short phrases naming how the second image
differs from the first. Phrases are normalized, pooled over pairs, deduplicated, and those proposed for at least
``min_count`` pairs are added to the concept bank of that run under the aspect ``proposed``.
"""

from __future__ import annotations

import logging
import re
from collections import Counter

import numpy as np

from finexl.chat import LLMError, image_part

logger = logging.getLogger(__name__)

PROMPT = (
    "Both images were generated from the prompt '{prompt}' with the same seed: the first by a base text-to-image "
    "model, the second by a personalized version of it. List up to 5 short phrases (1 to 4 words each), one per "
    "line, naming visual attributes in which the second image differs from the first (style, colour, lighting, "
    "texture, pose, composition, background, subject). Write only the phrases."
)


def parse_proposals(text: str) -> list[str]:
    """Phrases from a VLM reply: one per line, bullets/numbers/quotes stripped, 1-6 words, lower case."""
    out = []
    for line in re.split(r"[\n;]", text):
        phrase = re.sub(r"^\s*(?:[-*\u2022]|\d+[.)])\s*", "", line).strip().strip("\"'`.,:").strip().lower()
        phrase = re.sub(r"\s+", " ", phrase)
        words = phrase.split()
        if not (1 <= len(words) <= 6) or not re.search(r"[a-z]", phrase) or phrase in ("none", "no difference"):
            continue
        out.append(phrase)
    return out


def _key(phrase: str) -> str:
    phrase = re.sub(r"^(a|an|the|more|less)\s+", "", phrase.replace("-", " "))
    return " ".join(w[:-1] if w.endswith("s") and len(w) > 3 else w for w in phrase.split())


def propose_concepts(
    backend,
    base_images: np.ndarray,
    tuned_images: np.ndarray,
    prompts: list[str],
    n_pairs: int = 8,
    min_count: int = 2,
    max_phrases: int = 30,
) -> list[tuple[str, int]]:
    """Pooled, deduplicated proposals as ``(phrase, number of pairs proposing it)``, most frequent first."""
    if len(base_images) != len(tuned_images) or len(base_images) != len(prompts):
        raise ValueError("need one base image, one personalized image and one prompt per pair")
    picks = np.unique(np.linspace(0, len(prompts) - 1, min(n_pairs, len(prompts))).round().astype(int))
    counts: Counter[str] = Counter()
    first_form: dict[str, str] = {}
    failures = []
    for i in picks:
        messages = [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": PROMPT.format(prompt=prompts[i])},
                    image_part(base_images[i]),
                    image_part(tuned_images[i]),
                ],
            }
        ]
        try:
            reply = backend.chat(messages)
        except LLMError as err:
            failures.append(str(err))
            logger.warning("VLM proposal for pair %d failed: %s", i, err)
            continue
        for key in {_key(p): p for p in parse_proposals(reply)}.items():
            counts[key[0]] += 1
            first_form.setdefault(key[0], key[1])
    if failures and len(failures) == len(picks):
        raise LLMError(f"the VLM answered none of {len(picks)} pairs: {failures[0]}")
    kept = [(first_form[k], c) for k, c in counts.items() if c >= min_count]
    kept.sort(key=lambda pc: (-pc[1], pc[0]))
    return kept[:max_phrases]
