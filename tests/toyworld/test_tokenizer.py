from transformers import CLIPTokenizer

from finexl.toyworld.aspects import CATEGORICAL, GRADED
from finexl.toyworld.tokenizer import MAX_LENGTH


def test_tokenizer_loads_as_clip_tokenizer_and_knows_every_world_word(tiny_tokenizer_dir):
    tok = CLIPTokenizer.from_pretrained(tiny_tokenizer_dir)
    assert tok.model_max_length == MAX_LENGTH
    words = [w for a in CATEGORICAL for ws in a.words.values() for w in ws]
    words += [w for a in GRADED for w in a.low_words + a.high_words]
    for phrase in words:
        ids = tok(phrase).input_ids
        assert ids[0] == tok.bos_token_id and ids[-1] == tok.eos_token_id
        assert tok.unk_token_id not in ids[1:-1], phrase
    # Whole words of the world are single tokens, not characters.
    assert len(tok("a red heart on a striped background").input_ids) == 2 + 7


def test_builds_in_separate_processes_give_the_same_ids(tmp_path):
    # The BPE trainer breaks count ties in a per-process hash order; ids must not depend on it.
    import os
    import subprocess
    import sys

    code = "import sys; from finexl.toyworld.tokenizer import build_tokenizer; build_tokenizer(sys.argv[1])"
    for i, hash_seed in enumerate(("1", "2")):
        env = {**os.environ, "PYTHONHASHSEED": hash_seed}
        subprocess.run([sys.executable, "-c", code, str(tmp_path / str(i))], check=True, env=env, timeout=120)
    assert (tmp_path / "0" / "vocab.json").read_text() == (tmp_path / "1" / "vocab.json").read_text()
    assert (tmp_path / "0" / "merges.txt").read_text() == (tmp_path / "1" / "merges.txt").read_text()
