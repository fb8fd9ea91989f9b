"""The README tells today's truth: its quoted output is what the command prints now, and its Python block runs and
prints what its comments say."""

import contextlib
import io
import re
from pathlib import Path

from finexl.explanation.result import Explanation

README = Path(__file__).resolve().parents[1] / "README.md"


def blocks(kind: str) -> list[str]:
    return re.findall(rf"```{kind}\n(.*?)```", README.read_text(encoding="utf-8"), re.S)


def test_the_quoted_explain_output_is_what_the_readme_command_prints(red_folder):
    """The first text block is ``finexl explain --lora toy:red --out red`` with every default (``red_folder`` runs
    exactly that): the table and the sentences."""
    text = README.read_text(encoding="utf-8")
    assert "`finexl explain --lora toy:red --out red`" in text
    e = Explanation.from_json(red_folder)
    assert blocks("text")[0].rstrip("\n") == e.table() + "\n\n" + e.sentences["text"].rstrip("\n")


def test_the_python_block_runs_and_prints_what_it_says(red_folder, shared_cache, tmp_path, monkeypatch):
    (code,) = blocks("python")
    expected = [m.group(1).strip() for m in re.finditer(r"^print\(.*\)\s+# (.*)$", code, re.M)]
    assert len(expected) >= 2  # the block's claims, one comment per print
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("FINEXL_CACHE", str(shared_cache))  # the images red_folder made: the same run, faster
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code, str(README), "exec"), {})
    assert out.getvalue().splitlines() == expected
    assert (
        Explanation.from_json(tmp_path / "red-explanation.json").changed == Explanation.from_json(red_folder).changed
    )
