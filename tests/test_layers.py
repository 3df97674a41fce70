"""The house as drawn: streamd's modules form layers, imports run only downwards, no cycle.

Read from the source, not from `sys.modules`: every `import` and `from ... import` in
every module under `streamd/` is an edge, wherever it stands. A function-level import
counts like a module-level one (it hides a cycle from the interpreter, not from the
reader: the loader's import of the provider registries was one), and so does an import
under `if TYPE_CHECKING:` (a type is a dependency too). The registries' `importlib`
lookups by name are not edges: a table of names is how the lower layer stays ignorant
of the upper one.

The layers, lowest first; each may import itself and the ones `ALLOWED` names:

- **kit**: what every layer uses and that knows no feed: errors, escaping, units,
  secrets, the frozen config shapes, metrics, health, the retry step, logging.
- **model**: the unified entities and the CloudEvents envelope; pure.
- **store**: the SQLite feed, its writer and readers; it stores the model.
- **sources**: the seat a provider plugs into, and what pollers share. Not sinks.
- **sinks**: the seat a sink plugs into and the sinks themselves. Not sources.
- **providers**: each platform's wire format, normalizer, source and simulator,
  plugged into `sources`; never into a sink.
- **daemon**: wiring a config into running parts: loading the file (it consults the
  registries), the daemon's task group, the HTTP listener.
- **cli**: the command line and the demo it runs; it may use everything.

Run against another tree (a checkout of an older commit) with
`python tests/test_layers.py PATH`, or `STREAMD_LAYERS_ROOT=PATH pytest tests/test_layers.py`.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(os.environ.get("STREAMD_LAYERS_ROOT") or Path(__file__).resolve().parent.parent)

LAYERS = ("kit", "model", "store", "sources", "sinks", "providers", "daemon", "cli")

# Which layers each may import besides itself: the whole rule, in one table.
ALLOWED: dict[str, frozenset[str]] = {
    "kit": frozenset(),
    "model": frozenset({"kit"}),
    "store": frozenset({"kit", "model"}),
    "sources": frozenset({"kit", "model", "store"}),
    "sinks": frozenset({"kit", "model", "store"}),
    "providers": frozenset({"kit", "model", "store", "sources"}),
    "daemon": frozenset({"kit", "model", "store", "sources", "sinks", "providers"}),
    "cli": frozenset({"kit", "model", "store", "sources", "sinks", "providers", "daemon"}),
}

# Where each module stands: the longest matching prefix wins. A new top-level module is
# in no layer until it is placed here, and the test says so.
PLACES: dict[str, str] = {
    "streamd": "kit",  # the package itself: __version__
    "streamd.errors": "kit",
    "streamd.escape": "kit",
    "streamd.units": "kit",
    "streamd.secrets": "kit",
    "streamd.config": "kit",
    "streamd.metrics": "kit",
    "streamd.health": "kit",
    "streamd.retry": "kit",
    "streamd.logs": "kit",
    "streamd.notify": "kit",
    "streamd.asgi": "kit",
    "streamd.certs": "kit",
    "streamd.http_conn": "kit",  # streamd's HTTP/1.1 client: the http sink's and the pollers'
    "streamd.model": "model",
    "streamd.store": "store",
    "streamd.sources": "sources",
    "streamd.sinks": "sinks",
    "streamd.providers": "providers",
    "streamd.simulated": "providers",  # the loopback server the simulators share
    "streamd.configfile": "daemon",
    "streamd.daemon": "daemon",
    "streamd.web": "daemon",
    "streamd.listener": "daemon",
    "streamd.cli": "cli",
    "streamd.demo": "cli",
    "streamd.__main__": "cli",
}


def modules(root: Path) -> dict[str, Path]:
    """Every module under root/streamd, by dotted name (a package by its own name)."""
    found: dict[str, Path] = {}
    for path in sorted((root / "streamd").rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def _known(name: str, mods: dict[str, Path]) -> str:
    """The module a dotted name lives in: `streamd.cli.load_config` → `streamd.cli`."""
    while name not in mods and "." in name:
        name = name.rpartition(".")[0]
    return name


def imports(name: str, path: Path, mods: dict[str, Path]) -> Iterator[tuple[str, int]]:
    """The streamd modules one module imports, with the line of each import."""
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name == "streamd" or alias.name.startswith("streamd."):
                    yield _known(alias.name, mods), node.lineno
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[:len(package) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target != "streamd" and not target.startswith("streamd."):
                continue
            for alias in node.names:  # `from . import auth` imports the submodule auth
                sub = f"{target}.{alias.name}"
                yield (sub if sub in mods else _known(target, mods)), node.lineno


def graph(root: Path) -> dict[str, dict[str, int]]:
    """module → {module it imports: the first line that does}."""
    mods = modules(root)
    edges: dict[str, dict[str, int]] = {}
    for name, path in mods.items():
        out = edges.setdefault(name, {})
        for target, line in imports(name, path, mods):
            if target != name:
                out.setdefault(target, line)
    return edges


def layer(module: str) -> str | None:
    """The module's place: its own entry, else its package's (never just `streamd`'s)."""
    name = module
    while name != "streamd" or module == "streamd":
        if name in PLACES:
            return PLACES[name]
        if "." not in name:
            return None
        name = name.rpartition(".")[0]
    return None


def unplaced(edges: dict[str, dict[str, int]]) -> list[str]:
    return [m for m in edges if layer(m) is None]


def upward(edges: dict[str, dict[str, int]]) -> list[str]:
    """Every import that runs up the layers (or across, where the table forbids it)."""
    found = []
    for source, targets in sorted(edges.items()):
        mine = layer(source)
        for target, line in sorted(targets.items()):
            theirs = layer(target)
            if mine and theirs and theirs != mine and theirs not in ALLOWED[mine]:
                found.append(f"{source}:{line} imports {target} ({mine} → {theirs})")
    return found


def knots(edges: dict[str, dict[str, int]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan): the sets of
    modules that all reach each other through imports. No knot, no cycle."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(v: str) -> None:  # recursion depth ≤ the number of modules (~130)
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in edges.get(v, {}):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return components


def cycles(edges: dict[str, dict[str, int]]) -> list[list[str]]:
    """One cycle per knot, as a path that closes on itself."""
    return [_closed_path(knot, edges) for knot in knots(edges)]


def cycle_report(edges: dict[str, dict[str, int]]) -> list[str]:
    found = []
    for knot in knots(edges):
        path = _closed_path(knot, edges)
        more = set(knot) - set(path)
        found.append("import cycle: " + " → ".join(path)
                     + (f" (in a knot with {', '.join(sorted(more))})" if more else ""))
    return found


def _closed_path(component: list[str], edges: dict[str, dict[str, int]]) -> list[str]:
    """One cycle through a component's first module, for the message: a → b → a."""
    members = set(component)
    start = component[0]
    paths = {start: [start]}
    queue = [start]
    while queue:
        v = queue.pop(0)
        for w in sorted(edges.get(v, {})):
            if w == start:
                return paths[v] + [start]
            if w in members and w not in paths:
                paths[w] = paths[v] + [w]
                queue.append(w)
    return component  # unreachable for a strongly connected component


def problems(root: Path) -> list[str]:
    edges = graph(root)
    found = [f"{m} is in no layer: place it in PLACES (tests/test_layers.py)" for m in unplaced(edges)]
    found += upward(edges)
    found += cycle_report(edges)
    return found


# ---------------------------------------------------------------- the checks themselves

def test_every_module_is_in_a_layer() -> None:
    found = unplaced(graph(ROOT))
    assert not found, "in no layer (add to PLACES):\n" + "\n".join(found)


def test_no_import_runs_up_the_layers() -> None:
    found = upward(graph(ROOT))
    assert not found, "\n".join(found)


def test_no_import_cycle() -> None:
    found = cycle_report(graph(ROOT))
    assert not found, "\n".join(found)


def test_the_walk_sees_every_module_and_each_imports() -> None:
    """The graph is of the modules Python imports, not of a list of files that drifted:
    each one imports (in this process, with the test's dependencies), and the walk found
    the package where Python finds it."""
    if os.environ.get("STREAMD_LAYERS_ROOT"):
        pytest.skip("another tree: its modules are not the ones this interpreter imports")
    for name, path in modules(ROOT).items():
        if name.endswith(".__main__"):  # importing it runs the command line
            spec = importlib.util.find_spec(name)
            assert spec is not None and spec.origin is not None and Path(spec.origin) == path
            continue
        module = importlib.import_module(name)
        assert module.__file__ is not None and Path(module.__file__) == path, name


def test_the_command_line_and_the_daemon_name_no_provider() -> None:
    """Adding a provider is its folder and one registry line: the command line (demo, auth,
    deletions) and the daemon reach providers through `streamd.providers` and the hooks of
    their specs, never a provider's own modules."""
    found = [f"{m}:{line} imports {t}" for m, out in graph(ROOT).items()
             if m.startswith(("streamd.cli", "streamd.daemon")) for t, line in out.items()
             if t.startswith("streamd.providers.")]
    assert not found, found


_DAEMON_IMPORTS = """
import importlib, sys
import streamd.cli, streamd.configfile, streamd.daemon
from streamd.providers import PROVIDERS, provider_spec
from streamd.sinks import SINKS, sink_spec
for name, package in PROVIDERS.items():
    provider_spec(name)
    importlib.import_module(package + ".source")
for kind in SINKS:
    sink_spec(kind)
import streamd.sinks.nats_io, streamd.sinks.postgres.sink
print(" ".join(m for m in ("trustme", "streamd.certs", "streamd.simulated") if m in sys.modules))
"""


def test_the_daemon_never_imports_the_demo_kit() -> None:
    """trustme is a dependency for `streamd demo` and the simulators alone (pyproject.toml,
    README): the daemon, every source and every sink run without loading it."""
    if os.environ.get("STREAMD_LAYERS_ROOT"):
        pytest.skip("another tree: its modules are not the ones this interpreter imports")
    out = subprocess.run([sys.executable, "-c", _DAEMON_IMPORTS], capture_output=True, text=True,
                         timeout=60, check=True)
    assert out.stdout.split() == []


# ---------------------------------------------------------------- the checker, by data

def _tree(tmp_path: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        path = tmp_path / "streamd" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return tmp_path


def test_a_lazy_import_up_the_layers_is_found(tmp_path: Path) -> None:
    root = _tree(tmp_path, {
        "__init__.py": "",
        "config.py": "def parse():\n    from .providers import PROVIDERS\n    return PROVIDERS\n",
        "providers/__init__.py": "PROVIDERS = {}\n",
    })
    assert upward(graph(root)) == [
        "streamd.config:2 imports streamd.providers (kit → providers)"]


def test_sources_and_sinks_do_not_import_each_other(tmp_path: Path) -> None:
    root = _tree(tmp_path, {
        "__init__.py": "",
        "sources/__init__.py": "from ..sinks.base import Sink\n",
        "sinks/__init__.py": "",
        "sinks/base.py": "class Sink: ...\n",
    })
    assert upward(graph(root)) == [
        "streamd.sources:1 imports streamd.sinks.base (sources → sinks)"]


def test_a_cycle_through_a_function_level_import_is_found(tmp_path: Path) -> None:
    root = _tree(tmp_path, {
        "__init__.py": "",
        "store/__init__.py": "",
        "store/writer.py": "from . import reader\n",
        "store/reader.py": "def f():\n    from .schema import X\n",
        "store/schema.py": "from .writer import Y\n",
        "model/__init__.py": "from ..errors import E\n",
        "errors.py": "",
    })
    assert cycles(graph(root)) == [
        ["streamd.store.reader", "streamd.store.schema", "streamd.store.writer", "streamd.store.reader"]]
    assert upward(graph(root)) == []


def test_a_package_importing_its_own_submodule_and_back_is_a_cycle(tmp_path: Path) -> None:
    """`from . import load_config` in a subcommand, while the package imports the
    subcommand: the pattern that hides most easily."""
    root = _tree(tmp_path, {
        "__init__.py": "",
        "cli/__init__.py": "def load_config(): ...\ndef main():\n    from . import auth\n",
        "cli/auth.py": "def cmd():\n    from . import load_config\n",
    })
    assert cycles(graph(root)) == [["streamd.cli", "streamd.cli.auth", "streamd.cli"]]


def test_a_new_top_level_module_must_be_placed(tmp_path: Path) -> None:
    root = _tree(tmp_path, {"__init__.py": "", "gadget.py": "", "model/__init__.py": ""})
    assert unplaced(graph(root)) == ["streamd.gadget"]


if __name__ == "__main__":
    found = problems(Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT)
    print("\n".join(found) or "the layers hold")
    raise SystemExit(1 if found else 0)
