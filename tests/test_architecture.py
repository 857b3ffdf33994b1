"""The layers of docs/architecture.md, checked on the source: every import of every module of ours (``ast``, imports
inside functions and under ``if TYPE_CHECKING`` included) must follow an allowed arrow, our modules must not import
each other in a cycle, no module imports an underscore name of another, and the on-robot runtime's modules import
neither torch nor pybullet when they load.

Arrows (``A -> B``: a module of A may import B; every layer may import its own modules):

    launch.py -> robot, sim, models          microfarm.py (the dispatcher) -> toolkit
    robot     -> models, sim (sim only in robot.sim_robot and robot.export_cli)
    vision    -> models
    models    -> (nothing of ours)           sim -> (nothing of ours)
    every layer -> toolkit (microfarm_toolkit.py), which imports nothing of ours

The checker's functions are tested on fake import graphs and on a deliberately bad temporary tree below.
"""

from __future__ import annotations

import ast
import dataclasses
from collections.abc import Iterable, Mapping
from pathlib import Path

import pytest

from tests.conftest import ROOT

PACKAGES = ("robot", "vision", "sim", "models")
TOP_MODULES = {"microfarm_toolkit": "toolkit", "microfarm": "cli", "launch": "launch"}
ALLOWED: dict[str, set[str]] = {
    "toolkit": set(),
    "models": {"toolkit"},
    "sim": {"toolkit"},
    "vision": {"models", "toolkit"},
    "robot": {"models", "sim", "toolkit"},
    "cli": {"toolkit"},
    "launch": {"robot", "sim", "models", "toolkit"},
}
# robot reaches the simulator only through these modules: SimRobot (behind the Robot interface) and the export
# command, which renders its check frames with sim.sample_frames
GATES: dict[tuple[str, str], set[str]] = {("robot", "sim"): {"robot.sim_robot", "robot.export_cli"}}
# the on-robot runtime (`microfarm deploy`, `microfarm segment --backend onnx`): loading these modules, with the
# modules of ours they import when they load, must not import any of HEAVY
RUNTIME_ROOTS = ("microfarm", "microfarm_toolkit", "robot.deploy", "robot.registry", "robot.file_camera", "vision.cli",
                 "models.runtime", "models.onnx_segmenter", "models.support_io", "models.flags")
HEAVY = ("torch", "torchvision", "pybullet", "pybullet_data", "gymnasium", "onnx", "onnxscript", "safetensors",
         "scipy", "matplotlib", "pydensecrf", "minisom", "ray")


@dataclasses.dataclass(frozen=True)
class Imp:
    """One import in module ``src`` (line ``line``): of module ``dst`` (dotted), the names ``names`` from it (``from
    dst import a, b``; empty for ``import dst``); ``ours``: dst is one of our modules; ``lazy``: inside a function or
    under ``if TYPE_CHECKING`` (not run when ``src`` loads)."""

    src: str
    dst: str
    names: tuple[str, ...] = ()
    line: int = 0
    ours: bool = True
    lazy: bool = False


def discover(root: Path) -> dict[str, Path]:
    """Our modules under ``root``: dotted name -> file (packages' ``__init__.py`` under the package's name)."""
    found = {name: root / f"{name}.py" for name in TOP_MODULES if (root / f"{name}.py").is_file()}
    for pkg in PACKAGES:
        for path in sorted((root / pkg).rglob("*.py")):
            if "__pycache__" in path.parts:
                continue
            parts = path.relative_to(root).with_suffix("").parts
            found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _walk(node: ast.AST, lazy: bool = False) -> Iterable[tuple[ast.Import | ast.ImportFrom, bool]]:
    """Every import statement under ``node`` with whether it is lazy (in a function or an ``if TYPE_CHECKING``)."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.Import | ast.ImportFrom):
            yield child, lazy
        elif isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
            yield from _walk(child, True)
        elif isinstance(child, ast.If) and _is_type_checking(child.test):
            for stmt in child.body:
                yield from _walk(ast.Module(body=[stmt], type_ignores=[]), True)
            for stmt in child.orelse:
                yield from _walk(ast.Module(body=[stmt], type_ignores=[]), lazy)
        else:
            yield from _walk(child, lazy)


def _resolve(name: str, modules: Mapping[str, Path]) -> str | None:
    """The module of ours a dotted name refers to (its longest prefix that is a module), or None if not ours."""
    parts = name.split(".")
    for n in range(len(parts), 0, -1):
        if ".".join(parts[:n]) in modules:
            return ".".join(parts[:n])
    return None


def imports_of(module: str, source: str, modules: Mapping[str, Path]) -> list[Imp]:
    """Every import in ``source`` (the text of ``module``), ours resolved to the module they load."""
    is_pkg = modules.get(module, Path()).name == "__init__.py"
    package = module if is_pkg else module.rpartition(".")[0]
    found: list[Imp] = []
    for node, lazy in _walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                dst = _resolve(alias.name, modules)
                found.append(Imp(module, dst or alias.name, (), node.lineno, dst is not None, lazy))
            continue
        if node.level:  # relative: from . import x / from ..pkg import y
            base = package.split(".")[: len(package.split(".")) - node.level + 1]
            target = ".".join(base + ([node.module] if node.module else []))
        else:
            target = node.module or ""
        if target == "__future__":
            continue
        names = []
        for alias in node.names:  # `from pkg import submodule` imports the submodule
            sub = f"{target}.{alias.name}" if target else alias.name
            if sub in modules:
                found.append(Imp(module, sub, (), node.lineno, True, lazy))
            else:
                names.append(alias.name)
        dst = _resolve(target, modules) if target else None
        if dst is None and names:
            found.append(Imp(module, target, tuple(names), node.lineno, False, lazy))
        elif names:
            found.append(Imp(module, dst, tuple(names), node.lineno, True, lazy))
    return found


def layer(module: str) -> str:
    top = module.split(".")[0]
    return TOP_MODULES.get(top, top)


def arrow_violations(imports: Iterable[Imp]) -> list[str]:
    """Imports across a forbidden arrow, through a closed gate, or of another module's underscore name."""
    bad = []
    for i in imports:
        if not i.ours:
            continue
        a, b = layer(i.src), layer(i.dst)
        where = f"{i.src}:{i.line} imports {i.dst}"
        if a != b and b not in ALLOWED.get(a, set()):
            bad.append(f"{where}: {a} may not import {b} (allowed: {', '.join(sorted(ALLOWED.get(a, ()))) or 'none'})")
        gate = GATES.get((a, b))
        if gate is not None and i.src not in gate:
            bad.append(f"{where}: only {', '.join(sorted(gate))} may import {b}")
        private = [n for n in i.names if n.startswith("_") and not (n.startswith("__") and n.endswith("__"))]
        if private and i.src != i.dst:
            bad.append(f"{where}: underscore name(s) {', '.join(private)} (make them public or move them)")
    return bad


def import_cycles(imports: Iterable[Imp]) -> list[list[str]]:
    """The import cycles among our modules (strongly connected components of 2+ modules, or a module importing
    itself), each sorted; lazy imports count (a cycle through a function is still a tangle)."""
    graph: dict[str, set[str]] = {}
    loops = set()
    for i in imports:
        if i.ours:
            graph.setdefault(i.src, set()).add(i.dst)
            graph.setdefault(i.dst, set())
            if i.src == i.dst:
                loops.add(i.src)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = [[m] for m in sorted(loops)]

    def visit(v: str) -> None:  # Tarjan's algorithm
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(found)


def heavy_at_load(roots: Iterable[str], imports: Iterable[Imp], heavy: Iterable[str] = HEAVY) -> list[str]:
    """Import chains by which loading one of ``roots`` imports a ``heavy`` module (module-level imports only,
    parent packages' ``__init__`` included, as Python runs them)."""
    eager: dict[str, list[Imp]] = {}
    for i in imports:
        if not i.lazy:
            eager.setdefault(i.src, []).append(i)
    heavy = set(heavy)
    bad, seen = [], set()
    todo = [(r, [r]) for r in roots]
    while todo:
        mod, chain = todo.pop()
        if mod in seen:
            continue
        seen.add(mod)
        parents = [".".join(mod.split(".")[:n]) for n in range(1, mod.count(".") + 1)]
        for nxt in [*parents, *(i.dst for i in eager.get(mod, []) if i.ours)]:
            todo.append((nxt, [*chain, nxt]))
        bad += [" -> ".join([*chain, i.dst]) for i in eager.get(mod, [])
                if not i.ours and i.dst.split(".")[0] in heavy]
    return sorted(bad)


def all_imports(root: Path) -> list[Imp]:
    modules = discover(root)
    return [i for name, path in modules.items() for i in imports_of(name, path.read_text(), modules)]


# -- the tree ----------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tree() -> list[Imp]:
    return all_imports(ROOT)


def test_every_import_follows_the_arrows(tree: list[Imp]) -> None:
    assert arrow_violations(tree) == []


def test_no_import_cycles_between_our_modules(tree: list[Imp]) -> None:
    assert import_cycles(tree) == []


def test_the_on_robot_runtime_loads_without_torch_or_pybullet(tree: list[Imp]) -> None:
    modules = discover(ROOT)
    assert set(RUNTIME_ROOTS) <= set(modules)
    assert heavy_at_load(RUNTIME_ROOTS, tree) == []


def test_the_checker_sees_the_whole_tree(tree: list[Imp]) -> None:
    modules = discover(ROOT)
    assert {"microfarm", "microfarm_toolkit", "launch", "robot", "robot.deploy", "vision.train", "sim.envs",
            "models.runtime"} <= set(modules)
    srcs = {i.src for i in tree}
    assert {"launch", "microfarm", "robot.deploy", "vision.cli", "sim.envs", "models.pipeline"} <= srcs
    assert not [i for i in tree if i.src == "microfarm_toolkit" and i.ours]  # the toolkit is the ground floor
    assert any(i.lazy and i.ours for i in tree)  # imports inside functions are read


# -- the checker itself ------------------------------------------------------------------------------------
def test_arrow_violations_on_a_fake_graph() -> None:
    fake = [Imp("models.a", "vision.b", ("B",), 3), Imp("models.a", "microfarm_toolkit", ("UsageError",)),
            Imp("sim.envs", "robot.base", ("Robot",), lazy=True), Imp("vision.x", "models.y", ("_private",)),
            Imp("robot.deploy", "sim.envs", ("ENV_IDS",)), Imp("robot.sim_robot", "sim.envs", ("ENV_IDS",)),
            Imp("vision.x", "vision.y", ("_ok_inside_a_module_of_the_same_name",)), Imp("vision.x", "models.y"),
            Imp("models.a", "torch", ours=False), Imp("launch", "microfarm", ("run_command",)),
            Imp("microfarm_toolkit", "models.a"), Imp("models.a", "models.b", ("__version__",))]
    bad = arrow_violations(fake)
    assert len(bad) == 7, bad
    assert bad[0].startswith("models.a:3 imports vision.b: models may not import vision")
    assert "sim may not import robot" in bad[1]
    assert "underscore name(s) _private" in bad[2] and "vision.x" in bad[2]
    assert "robot.deploy" in bad[3] and "only robot.export_cli, robot.sim_robot may import sim" in bad[3]
    assert "vision.x:0 imports vision.y: underscore name(s) _ok_inside" in bad[4]  # across modules of one layer too
    assert "launch may not import cli" in bad[5] and "toolkit may not import models" in bad[6]


def test_import_cycles_on_a_fake_graph() -> None:
    fake = [Imp("a", "b"), Imp("b", "c", lazy=True), Imp("c", "a"), Imp("c", "d"), Imp("d", "e"), Imp("e", "d"),
            Imp("f", "f"), Imp("g", "numpy", ours=False), Imp("numpy", "g", ours=False)]
    assert import_cycles(fake) == [["a", "b", "c"], ["d", "e"], ["f"]]
    assert import_cycles([Imp("a", "b"), Imp("b", "c"), Imp("a", "c")]) == []


def test_heavy_at_load_on_a_fake_graph() -> None:
    fake = [Imp("robot.deploy", "models.runtime"), Imp("models.runtime", "onnxruntime", ours=False),
            Imp("models.runtime", "models.guided_net", lazy=True), Imp("models.guided_net", "torch", ours=False),
            Imp("robot", "robot.base"), Imp("robot.base", "torch.nn", ours=False)]
    assert heavy_at_load(["robot.deploy"], fake) == ["robot.deploy -> robot -> robot.base -> torch.nn"]
    assert heavy_at_load(["models.runtime"], fake) == []


def test_the_checker_fails_on_a_bad_tree(tmp_path: Path) -> None:
    """A temporary tree with the faults the checker exists for: models importing sim lazily, a cycle in vision,
    an underscore name taken from another module, a relative import across the arrows."""
    files = {
        "microfarm_toolkit.py": "import os\n",
        "models/__init__.py": "",
        "models/export.py": "from microfarm_toolkit import UsageError\n\ndef render():\n    import sim.envs\n",
        "sim/__init__.py": "",
        "sim/envs.py": "import pybullet\nfrom .. import robot\n",
        "vision/__init__.py": "",
        "vision/train.py": "from vision.train_data import _flush_log\nfrom vision import episodes\n",
        "vision/train_data.py": "import typing\nif typing.TYPE_CHECKING:\n    from vision.train import Cfg\n",
        "vision/episodes.py": "import torch\n",
        "vision/cli.py": "from vision.train import train\n",
        "robot/__init__.py": "",
    }
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    imports = all_imports(tmp_path)
    bad = arrow_violations(imports)
    assert any(b.startswith("models.export:4 imports sim.envs: models may not import sim") for b in bad), bad
    assert any(b.startswith("sim.envs:2 imports robot: sim may not import robot") for b in bad), bad
    assert any("vision.train:1 imports vision.train_data: underscore name(s) _flush_log" in b for b in bad), bad
    assert len(bad) == 3, bad
    assert import_cycles(imports) == [["vision.train", "vision.train_data"]]
    assert heavy_at_load(["vision.cli"], imports) == ["vision.cli -> vision.train -> vision.episodes -> torch"]
    assert heavy_at_load(["models.export"], imports) == []  # sim is imported inside a function
