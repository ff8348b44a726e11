"""The shape of the code base: imports point down the layers of docs/architecture.md §Layers, no import cycle anywhere,
no sys.path edits, no module over 500 lines, benchmarks/ within its line budget."""

import ast
import gc
import tomllib

from helpers import ROOT


def parse(path):
    """ast.parse with garbage collection paused: CPython 3.11's parser fails ("AST constructor recursion depth
    mismatch") when a finalizer raises during the parse, as numba's do after the FFCV tests in the same process."""
    collecting = gc.isenabled()
    gc.disable()
    try:
        return ast.parse(path.read_text(), str(path))
    finally:
        if collecting:
            gc.enable()

MAX_LINES = 500
BENCHMARKS_MAX_LINES = 2000  # benchmarks/ measures the product; one-off questions go to studies/
# folders installed under sdbnn's namespace (pyproject.toml's package-dir)
NAMESPACED = {"kernels": "sdbnn.kernels", "pipelines": "sdbnn.pipelines", "sdbnn": "sdbnn"}
NOT_SOURCE = {"build", "dist", "runs", "__pycache__"}


def python_files() -> list:
    """Every .py file of the repository (no virtual environment, build output or hidden folder)."""
    return sorted(
        path for path in ROOT.rglob("*.py")
        if not any(part.startswith(".") or part in NOT_SOURCE or part.endswith(".egg-info")
                   for part in path.relative_to(ROOT).parts[:-1])
    )


def modules_under(folder: str, package: str) -> dict:
    """{module name: path} of every module in ``folder``, named as ``package`` (``python -m`` names them so)."""
    modules = {}
    for path in (ROOT / folder).rglob("*.py"):
        parts = list(path.relative_to(ROOT / folder).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join([package, *parts])] = path
    return modules


def package_modules() -> dict:
    """{module name: path} of every module of the installed package, kernels/ and pipelines/ included."""
    return {name: path for folder, package in NAMESPACED.items() for name, path in modules_under(folder, package).items()}


def repository_modules() -> dict:
    """The package's modules, the launchers, the benchmarks and the studies."""
    return {**package_modules(), **{name: path for folder in ("launch", "benchmarks", "studies")
                                    for name, path in modules_under(folder, folder).items()}}


def test_every_package_folder_is_installed():
    # pyproject.toml lists packages by name: a new sub-package left out would be missing from a non-editable install
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    packages = {name for name, path in package_modules().items() if path.name == "__init__.py"}
    assert packages == listed - {"sdbnn.layouts"}  # layouts/ holds data files only


def imported_modules(name: str, path, known: set) -> set:
    """The modules of ``known`` that ``name`` imports anywhere in its file (inside functions too: a lazy import
    still ties the two modules together)."""
    is_package = path.name == "__init__.py"
    found = set()
    for node in ast.walk(parse(path)):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = name.split(".")[: len(name.split(".")) - node.level + is_package]
                base = ".".join([*anchor, *([base] if base else [])])
            # `from package import module` names the module; `from module import attribute` the module itself
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base for alias in node.names]
        else:
            continue
        found.update(target for target in targets if target in known and target != name)
    return found


def import_cycles(graph: dict) -> list:
    """The strongly connected components with more than one module (Tarjan), each sorted."""
    index, low, stack, on_stack, cycles = {}, {}, [], set(), []

    def visit(node):
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for successor in graph[node]:
            if successor not in index:
                visit(successor)
                low[node] = min(low[node], low[successor])
            elif successor in on_stack:
                low[node] = min(low[node], index[successor])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return cycles


def import_graph() -> dict:
    modules = repository_modules()
    return {name: imported_modules(name, path, set(modules)) for name, path in modules.items()}


def test_no_import_cycle_anywhere():
    graph = import_graph()
    assert {"sdbnn.deploy.cost", "sdbnn.kernels.act_sign", "sdbnn.pipelines.loaders", "launch.cifar",
            "benchmarks.gpu_session.plan", "studies.late_epoch"} <= set(graph)
    assert "sdbnn.deploy.inference" in graph["sdbnn.deploy.packed"]  # the parser sees the imports it must
    assert "sdbnn.reference" in graph["sdbnn.kernels.surrogates"]
    assert import_cycles(graph) == []


# docs/architecture.md §Layers, bottom first: a module imports from its own layer and the layers below it. Two sit
# beside the stack: "beside" (files, checkpoints, provenance), which any layer may use and which uses no other, and
# "pipelines" (data), which uses only "beside" and is used from engine/deploy up.
STACK = ["reference", "kernels", "ops", "layers", "models", "engine/deploy", "launchers", "benchmarks", "studies"]
LAYER_OF = {  # module name or prefix -> layer; the longest match decides
    "sdbnn.io": "beside", "sdbnn.checkpoints": "beside", "sdbnn.provenance": "beside",
    "sdbnn.reference": "reference",
    "sdbnn.kernels": "kernels",
    "sdbnn.ops": "ops",
    "sdbnn.layers": "layers",
    "sdbnn": "models", "sdbnn.models": "models", "sdbnn.official": "models",  # `sdbnn` re-exports models and below
    "sdbnn.testing": "models",  # the kernel and whole-model checks the tests and the GPU session share
    "sdbnn.engine": "engine/deploy", "sdbnn.deploy": "engine/deploy", "sdbnn.summary": "engine/deploy",
    "sdbnn.export": "engine/deploy",
    "sdbnn.pipelines": "pipelines",
    "launch": "launchers", "benchmarks": "benchmarks", "studies": "studies",
}


def layer_of(module: str) -> str:
    prefixes = [prefix for prefix in LAYER_OF if module == prefix or module.startswith(prefix + ".")]
    assert prefixes, f"{module} belongs to no layer: add it to LAYER_OF (and to docs/architecture.md §Layers)"
    return LAYER_OF[max(prefixes, key=len)]


def may_import(importer: str, imported: str) -> bool:
    """Whether a module of layer ``importer`` may import one of layer ``imported``."""
    if importer == imported or imported == "beside":
        return True
    if "beside" in (importer, imported) or importer == "pipelines":
        return False
    if imported == "pipelines":
        return STACK.index(importer) >= STACK.index("engine/deploy")
    return STACK.index(imported) < STACK.index(importer)


def upward_imports(graph: dict) -> list[str]:
    return sorted(f"{name} ({layer_of(name)}) imports {target} ({layer_of(target)})" for name, targets in graph.items()
                  for target in targets if not may_import(layer_of(name), layer_of(target)))


def test_imports_point_down_the_layers():
    assert upward_imports(import_graph()) == []
    # the rule itself: the package never imports benchmarks or studies, benchmarks never import studies
    assert upward_imports({"sdbnn.ops": {"sdbnn.layers"}, "sdbnn.engine.trainer": {"benchmarks.common"},
                           "benchmarks.kernels": {"studies.cpu_step"}, "sdbnn.pipelines.loaders": {"sdbnn.ops"},
                           "sdbnn.reference": {"sdbnn.pipelines"}, "studies.cpu_step": {"benchmarks.common"},
                           "launch.cifar": {"sdbnn.engine.cli"}, "sdbnn.engine.config": {"sdbnn.pipelines.loaders"},
                           "sdbnn.kernels.tiles": {"sdbnn.io"}}) == [
        "benchmarks.kernels (benchmarks) imports studies.cpu_step (studies)",
        "sdbnn.engine.trainer (engine/deploy) imports benchmarks.common (benchmarks)",
        "sdbnn.ops (ops) imports sdbnn.layers (layers)",
        "sdbnn.pipelines.loaders (pipelines) imports sdbnn.ops (ops)",
        "sdbnn.reference (reference) imports sdbnn.pipelines (pipelines)"]


def test_cycle_finder_finds_lazy_and_relative_imports(tmp_path):
    (tmp_path / "a.py").write_text("def f():\n    from pkg import b\n")
    (tmp_path / "b.py").write_text("from .c import thing\n")
    (tmp_path / "c.py").write_text("import pkg.a\n")
    (tmp_path / "d.py").write_text("import pkg.c\n")
    names = {f"pkg.{letter}": tmp_path / f"{letter}.py" for letter in "abcd"}
    graph = {name: imported_modules(name, path, set(names)) for name, path in names.items()}
    assert graph == {"pkg.a": {"pkg.b"}, "pkg.b": {"pkg.c"}, "pkg.c": {"pkg.a"}, "pkg.d": {"pkg.c"}}
    assert import_cycles(graph) == [["pkg.a", "pkg.b", "pkg.c"]]


def sys_path_edits(path) -> list[int]:
    """Line numbers where a file changes sys.path: a call of one of its methods, or an assignment to it."""
    def is_sys_path(node) -> bool:
        return isinstance(node, ast.Attribute) and node.attr == "path" and isinstance(node.value, ast.Name) \
            and node.value.id == "sys"

    lines = []
    for node in ast.walk(parse(path)):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and is_sys_path(node.func.value):
            lines.append(node.lineno)  # sys.path.insert(...), .append, .extend, .remove, ...
        elif isinstance(node, (ast.Assign, ast.AugAssign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                if is_sys_path(target) or isinstance(target, ast.Subscript) and is_sys_path(target.value):
                    lines.append(node.lineno)
    return sorted(lines)


def test_no_file_edits_sys_path(tmp_path):
    edits = [f"{path.relative_to(ROOT)}:{line}" for path in python_files() for line in sys_path_edits(path)]
    assert edits == [], "run scripts as `python -m package.module` instead of editing sys.path: " + ", ".join(edits)
    sample = tmp_path / "sample.py"
    sample.write_text("import sys\nsys.path.insert(0, 'x')\nsys.path += ['y']\nsys.path[:0] = ['z']\n"
                      "print(sys.path)\n")
    assert sys_path_edits(sample) == [2, 3, 4]  # the finder sees every kind of edit, and reading is no edit


def test_no_module_over_500_lines():
    files = python_files()
    assert ROOT / "sdbnn" / "deploy" / "cost.py" in files and ROOT / "tests" / "test_structure.py" in files
    long = {str(path.relative_to(ROOT)): count for path in files
            if (count := len(path.read_text().splitlines())) > MAX_LINES}
    assert long == {}, f"split these modules (over {MAX_LINES} lines): {long}"


def test_benchmarks_stay_within_their_line_budget():
    counts = {str(path.relative_to(ROOT)): len(path.read_text().splitlines()) for path in python_files()
              if path.relative_to(ROOT).parts[0] == "benchmarks"}
    assert "benchmarks/common.py" in counts
    assert sum(counts.values()) <= BENCHMARKS_MAX_LINES, f"benchmarks/ is {sum(counts.values())} lines: {counts}"
