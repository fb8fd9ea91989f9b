"""The package's layers (``.importlinter``, docs/architecture.md) hold: no upward import, no cycle, no private name
of another module, and in-function imports of finexl's own modules only where they keep torch out of a light one."""

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import grimp

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "finexl"
LINT = Path(sys.executable).parent / "lint-imports"
HEAVY = {"torch", "diffusers", "transformers", "peft", "open_clip", "ray", "torchvision"}


def lint(cwd: Path, env_path: Path | None = None) -> subprocess.CompletedProcess:
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(env_path)} if env_path else None
    return subprocess.run([str(LINT), "--config", str(ROOT / ".importlinter")], cwd=cwd, capture_output=True,
                          text=True, env=env)  # fmt: skip


def test_the_import_contracts_are_kept_and_an_upward_import_breaks_them(tmp_path):
    result = lint(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout
    # the same contracts on a copy where the lowest layer imports the command line: broken
    copy = tmp_path / "finexl"
    shutil.copytree(PACKAGE, copy, ignore=shutil.ignore_patterns("data", "__pycache__", "*.json", "*.j2"))
    (copy / "utils.py").write_text((copy / "utils.py").read_text() + "\nimport finexl.cli  # noqa\n")
    broken = lint(tmp_path, env_path=tmp_path)
    assert broken.returncode != 0 and "finexl.utils -> finexl.cli" in broken.stdout


def strongly_connected(graph: grimp.ImportGraph) -> list[set[str]]:
    """Tarjan's strongly connected components of more than one module."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.find_modules_directly_imported_by(v):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = set()
            while True:
                w = stack.pop()
                on.discard(w)
                component.add(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(component)

    sys.setrecursionlimit(10_000)
    for v in sorted(graph.modules):
        if v not in index:
            visit(v)
    return out


def test_no_module_imports_itself_back_through_others():
    graph = grimp.build_graph("finexl")
    assert strongly_connected(graph) == []
    # the check finds a cycle where there is one
    graph.add_import(importer="finexl.errors", imported="finexl.utils")
    assert any({"finexl.errors", "finexl.utils"} <= c for c in strongly_connected(graph))


def modules() -> dict[str, ast.Module]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        name = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
        out[name] = ast.parse(path.read_text(encoding="utf-8"))
    return out


def test_no_module_imports_a_private_name_of_another():
    found = [f"{m}: from {n.module} import {a.name}" for m, tree in modules().items() for n in ast.walk(tree)
             if isinstance(n, ast.ImportFrom) and (n.module or "").startswith("finexl")
             for a in n.names if a.name.startswith("_") and not a.name.startswith("__")]  # fmt: skip
    assert found == []


def top_level_imports(tree: ast.Module) -> list[str]:
    out = []
    for node in tree.body:
        for sub in ast.walk(node) if isinstance(node, ast.If | ast.Try) else [node]:
            if isinstance(sub, ast.Import):
                out += [a.name for a in sub.names]
            elif isinstance(sub, ast.ImportFrom) and sub.module:
                out += [sub.module] + [f"{sub.module}.{a.name}" for a in sub.names]
    return out


def test_in_function_imports_of_finexl_only_keep_heavy_modules_out_of_light_ones():
    trees = modules()
    top = {m: top_level_imports(t) for m, t in trees.items()}
    heavy: dict[str, bool] = {}

    def is_heavy(m: str, seen=()) -> bool:
        if m not in heavy:
            parents = [".".join(m.split(".")[:i]) for i in range(1, m.count(".") + 1)]
            deps = [d for p in [m, *parents] for d in top.get(p, [])]
            heavy[m] = any(d.split(".")[0] in HEAVY or (d in trees and d not in seen and is_heavy(d, (*seen, m)))
                           for d in deps)  # fmt: skip
        return heavy[m]

    hidden = []
    for m, tree in trees.items():
        for fn in ast.walk(tree):
            if not isinstance(fn, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            for node in ast.walk(fn):
                if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("finexl"):
                    targets = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
                    if not any(is_heavy(t) for t in targets if t in trees) or is_heavy(m):
                        hidden.append(f"{m}: from {node.module} import ...")
    assert hidden == []
