"""An offline CLIP tokenizer for the toy world: a small byte-pair vocabulary learnt from toy captions.

The files it writes (``vocab.json``, ``merges.txt``) are in the format of OpenAI's CLIP tokenizer, so the result
loads with ``transformers.CLIPTokenizer.from_pretrained(dir)`` like the tokenizer of any Stable Diffusion folder.
"""

from __future__ import annotations

import json
import string
from pathlib import Path

import numpy as np

from finexl.toyworld.aspects import CATEGORICAL, GRADED, sample_aspects
from finexl.toyworld.captions import caption

BOS, EOS = "<|startoftext|>", "<|endoftext|>"
MAX_LENGTH = 40


def _corpus(n: int, seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    texts = [caption(sample_aspects(rng), rng)[0] for _ in range(n)]
    # Every phrase of the world at least once, so no word of it falls back to characters only by chance.
    for aspect in CATEGORICAL:
        texts += [" ".join(words) for words in aspect.words.values()]
    for aspect in GRADED:
        texts += [" ".join(aspect.low_words + aspect.high_words)]
    return texts


def build_tokenizer(out_dir: str | Path, vocab_size: int = 400, seed: int = 0):
    """Learn the vocabulary and write a ``CLIPTokenizer`` folder to ``out_dir``. Returns the loaded tokenizer."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers
    from transformers import CLIPTokenizer

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    bpe = Tokenizer(models.BPE(unk_token=EOS, end_of_word_suffix="</w>"))
    bpe.normalizer = normalizers.Lowercase()
    # CLIP splits words from punctuation; digits and letters suffice here.
    bpe.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Whitespace()])
    alphabet = list(string.ascii_lowercase + string.digits + string.punctuation)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[BOS, EOS],
        initial_alphabet=alphabet,
        end_of_word_suffix="</w>",
        show_progress=False,
    )
    bpe.train_from_iterator(_corpus(4000, seed), trainer=trainer)
    tokens = set(bpe.get_vocab()) - {BOS, EOS}
    # CLIP's tokenizer needs every single character both inside and at the end of a word.
    tokens |= {token for ch in alphabet for token in (ch, ch + "</w>")}
    # The BPE trainer numbers tokens in hash order where counts tie, which differs between processes; the ids are
    # renumbered in sorted order so that a build is the same every time (merges name tokens by string).
    vocab = {BOS: 0, EOS: 1} | {token: i + 2 for i, token in enumerate(sorted(tokens))}
    merges = json.loads(bpe.to_str())["model"]["merges"]
    merges = [" ".join(m) if isinstance(m, list) else m for m in merges]
    (out_dir / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False))
    (out_dir / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    tokenizer = CLIPTokenizer.from_pretrained(out_dir, model_max_length=MAX_LENGTH, pad_token=EOS)
    tokenizer.save_pretrained(out_dir)
    return tokenizer
