"""The package layout keeps its promises: no import cycles (lazy imports inside functions count), `pipelines/`
imports `hvt/` and never the reverse, `hvt/` knows nothing of Prefect, and the CLI starts without the heavy stack.

The import graph is read from the source with `ast`, so an import hidden inside a function is an edge like any
other: a lazy import that closes a cycle only moves the failure to run time.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("hvt", "pipelines")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _project_modules() -> dict[str, Path]:
    modules = {}
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            modules[_module_name(path)] = path
    return modules


def _resolve_relative(module: str, is_package: bool, level: int, target: str | None) -> str:
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[: len(base) - (level - 1)] if level > 1 else base
    return ".".join([*base, target] if target else base)


def _lazy_exports(modules: dict[str, Path]) -> dict[str, dict[str, str]]:
    """package -> {name: submodule} from each ``_LAZY_EXPORTS`` dict (hvt/lazy.py)."""
    found: dict[str, dict[str, str]] = {}
    for name, path in modules.items():
        if path.name != "__init__.py":
            continue
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.Assign) and any(getattr(t, "id", "") == "_LAZY_EXPORTS" for t in node.targets):
                found[name] = {key: f"{name}.{value}" for key, value in ast.literal_eval(node.value).items()}
    return found


def import_graph() -> dict[str, set[str]]:
    """Edges module -> project module it imports (anywhere in the file, functions included).

    ``from pkg import Name`` of a lazily exported name is an edge to the submodule that defines it.
    """
    modules = _project_modules()
    lazy = _lazy_exports(modules)
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        is_package = path.name == "__init__.py"
        for node in ast.walk(tree):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                source = (
                    _resolve_relative(name, is_package, node.level, node.module) if node.level else node.module or ""
                )
                # `from pkg import submodule` imports the submodule; `from pkg import name` runs pkg/__init__.
                targets = [
                    f"{source}.{alias.name}"
                    if f"{source}.{alias.name}" in modules
                    else lazy.get(source, {}).get(alias.name, source)
                    for alias in node.names
                ]
            for target in targets:
                while target and target not in modules:  # `import a.b.c` of a non-module attribute path
                    target = target.rpartition(".")[0]
                if target and target != name:
                    graph[name].add(target)
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = [0]

    def visit(node: str) -> None:
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))
    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_graph_reader_sees_lazy_imports_and_finds_a_planted_cycle():
    graph = import_graph()
    assert "hvt.cli" in graph and graph["hvt.cli"], "the reader found no imports in hvt.cli"
    # `from hvt.data import DataConfig` (hvt/config.py) resolves through the lazy exports to its submodule
    assert "hvt.data.config" in graph["hvt.config"]
    planted = {name: set(edges) for name, edges in graph.items()}
    planted["hvt.storage"].add("hvt.cli")
    planted["hvt.cli"].add("hvt.storage")
    assert any({"hvt.cli", "hvt.storage"} <= set(c) for c in _cycles(planted))


def test_no_import_cycles():
    cycles = _cycles(import_graph())
    assert not cycles, "import cycles (imports inside functions count): " + "; ".join(" <-> ".join(c) for c in cycles)


def test_hvt_never_imports_pipelines_or_prefect():
    offenders = []
    for name, path in _project_modules().items():
        if not name.startswith("hvt"):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            roots = []
            if isinstance(node, ast.Import):
                roots = [alias.name.split(".")[0] for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
                roots = [node.module.split(".")[0]]
            offenders += [f"{name} imports {root}" for root in roots if root in ("pipelines", "prefect")]
    assert not offenders, offenders


HEAVY = ("torch", "ray", "prefect", "pandas", "pyarrow", "decord", "av", "matplotlib")


def _heavy_modules_loaded(argv: list[str]) -> list[str]:
    code = (
        "import sys, contextlib, io\n"
        "from hvt import cli\n"
        f"argv = {argv!r}\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        "    try:\n"
        "        cli.main(argv)\n"
        "    except SystemExit:\n"
        "        pass\n"
        f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    return ast.literal_eval(proc.stdout.strip().splitlines()[-1])


def _command_names() -> list[str]:
    from hvt import cli

    return list(cli.COMMAND_MODULES)


def test_top_level_help_loads_no_heavy_library():
    assert _heavy_modules_loaded(["--help"]) == []


@pytest.mark.parametrize("command", _command_names())
def test_each_command_help_loads_no_heavy_library(command):
    assert _heavy_modules_loaded([command, "--help"]) == []


def test_local_sharding_loads_no_cluster_or_orchestration_stack(tmp_path):
    """Shard time (probe, frame check with the training decoder, transcode, tar writing) on local processes
    needs neither Ray nor Prefect (webdataset's writer does load torch)."""
    code = (
        "import sys\n"
        "from hvt.ingest.synthetic import make_synthetic_dataset\n"
        "from hvt.commands.shard import main\n"
        "d = make_synthetic_dataset(sys.argv[1], classes=2, per_class=2, frames=12, size=(64, 64), seed=3)\n"
        "rc = main(['--annotations', d.annotations_csv, '--videos', d.videos_dir, '--store', sys.argv[2],\n"
        "           '--name', 'ds', '--transcode', '--short-side', '32', '--quiet', '--json'])\n"
        "assert rc == 0, rc\n"
        f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code, str(tmp_path / "videos"), str(tmp_path / "store")],
                          capture_output=True, text=True, timeout=300, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    loaded = ast.literal_eval(proc.stdout.strip().splitlines()[-1])
    assert "ray" not in loaded and "prefect" not in loaded, loaded
