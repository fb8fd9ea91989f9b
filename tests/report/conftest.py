import pytest

from finexl.cli import main

# the shipped red LoRA: 32 pairs are enough for its colour change to clear the null (see tests/test_api.py)
EXPLAIN = ["explain", "--lora", "data/toy_loras/red", "--samples", "32", "--bootstrap", "100", "--report-pairs", "10",
           "--threads", "2", "-q"]  # fmt: skip


@pytest.fixture(scope="session")
def red_folder(tmp_path_factory):
    """``finexl explain --lora data/toy_loras/red --out DIR``, made once: the report tests only read it."""
    root = tmp_path_factory.mktemp("red")
    assert main([*EXPLAIN, "--cache", str(root / "cache"), "--out", str(root / "red")]) == 0
    return root / "red"
