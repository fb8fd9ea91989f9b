import json

import pytest

from finexl.utils import TrainingClock, atomic_dir, atomic_write_json


def test_atomic_dir_replaces_whole_or_keeps_the_old(tmp_path):
    target = tmp_path / "out"
    with atomic_dir(target) as tmp:
        (tmp / "a.txt").write_text("first")
    assert (target / "a.txt").read_text() == "first"
    with pytest.raises(RuntimeError):
        with atomic_dir(target) as tmp:
            (tmp / "a.txt").write_text("half")
            raise RuntimeError("killed mid-write")
    assert (target / "a.txt").read_text() == "first"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no temporary left behind
    with atomic_dir(target) as tmp:
        (tmp / "b.txt").write_text("second")
    assert sorted(p.name for p in target.iterdir()) == ["b.txt"]


def test_atomic_write_json_leaves_no_temporary(tmp_path):
    atomic_write_json(tmp_path / "x.json", {"a": 1})
    assert json.loads((tmp_path / "x.json").read_text()) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["x.json"]


def test_training_clock_warms_up_and_anneals():
    import torch

    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    clock = TrainingClock(steps=100, max_minutes=1e9, warmup=10, lr=1.0)
    assert clock.set_lr(opt, 0) == pytest.approx(0.1, rel=0.01)
    assert clock.set_lr(opt, 50) == pytest.approx(0.05 + 0.95 * 0.5, rel=0.01)
    assert clock.set_lr(opt, 100) == pytest.approx(0.05, rel=0.01)
    assert opt.param_groups[0]["lr"] == pytest.approx(0.05, rel=0.01)
    assert not clock.done(50) and clock.done(99)
