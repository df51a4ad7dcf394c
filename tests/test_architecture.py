"""The house's import rules: no circles, no upward imports, click only in cli/.

The import graph comes from grimp (static: every `import` in the source,
function-level ones included, so a circle cannot hide behind a deferred
import). Each test lists every violation it finds, with the file line.
"""

import ast
import collections
import re
from pathlib import Path

import grimp
import pytest

import keras_ft

PACKAGE = Path(keras_ft.__file__).parent

# Floors from the top: a module may import its own floor's wings and lower
# floors, never a higher floor. A wing is a subpackage (all its modules) or a
# top-level module.
LAYERS = (
    # Entry points: `python -m keras_ft`, and the aliases the design card names.
    ("keras_ft.__main__", "keras_ft.run", "keras_ft.convert"),
    ("keras_ft.cli",),
    # Tiny presets for tests, and the catalogue of private APIs (it probes
    # keras_ft's own readers): they may import anything below the CLI, and
    # nothing in the library imports them.
    ("keras_ft.testing", "keras_ft.private_api"),
    ("keras_ft.export", "keras_ft.evaluation", "keras_ft.serving"),
    # The package's face: `from keras_ft import Config, finetune`.
    ("keras_ft",),
    ("keras_ft.pipeline",),
    # `distribution` (device meshes) builds on the model, beside training.
    ("keras_ft.generation", "keras_ft.train", "keras_ft.distribution"),
    ("keras_ft.data", "keras_ft.model"),
    # The GGUF converter sits below model/: presets resolve the embedded
    # default model through it.
    ("keras_ft.gguf",),
    ("keras_ft.config",),
    (
        "keras_ft.templates",
        "keras_ft.hub",
        "keras_ft.files",
        "keras_ft.preset_files",
        "keras_ft.native_logs",
    ),
)
FLOOR = {wing: floor for floor, wings in enumerate(LAYERS) for wing in wings}
CLI_ONLY = ("click", "argparse")
HEAVY_COMMENT = re.compile(r"#.*\bheavy:\s*\S")


@pytest.fixture(scope="module")
def graph():
    return grimp.build_graph(
        "keras_ft",
        include_external_packages=True,
        exclude_type_checking_imports=True,
        cache_dir=None,
    )


def wing(module: str) -> str:
    """`keras_ft.data.split` -> `keras_ft.data`; `keras_ft.config` stays."""
    return ".".join(module.split(".")[:2])


def internal_imports(graph) -> list[tuple[str, str]]:
    return sorted(
        (importer, imported)
        for importer in graph.modules
        if importer.startswith("keras_ft")
        for imported in graph.find_modules_directly_imported_by(importer)
        if imported == "keras_ft" or imported.startswith("keras_ft.")
    )


def where(graph, importer: str, imported: str) -> str:
    details = graph.get_import_details(importer=importer, imported=imported)
    return "; ".join(f"line {d['line_number']}: {d['line_contents']}" for d in details)


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one node (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(node):
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(edges.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def test_no_import_cycles_between_wings_or_inside_one(graph):
    modules, wings = collections.defaultdict(set), collections.defaultdict(set)
    for importer, imported in internal_imports(graph):
        modules[importer].add(imported)
        if wing(importer) != wing(imported):
            wings[wing(importer)].add(wing(imported))
    problems = []
    for kind, edges in (("modules", modules), ("wings", wings)):
        for component in cycles(edges):
            arrows = [f"{a} -> {b}" for a in component for b in sorted(edges[a]) if b in component]
            problems.append(
                f"import cycle among {kind} {', '.join(component)}: " + "; ".join(arrows)
            )
    assert not problems, "\n".join(problems)


def test_every_wing_has_a_floor(graph):
    wings = {wing(m) for m in graph.modules if m.startswith("keras_ft")}
    unplaced = sorted(wings - set(FLOOR))
    assert not unplaced, (
        f"{', '.join(unplaced)}: not in tests/test_architecture.py's "
        "LAYERS; place each on the floor its imports allow."
    )


def test_no_module_imports_a_higher_floor(graph):
    problems = [
        f"{importer} (floor {FLOOR[wing(importer)]}) imports {imported} (floor "
        f"{FLOOR[wing(imported)]}, higher): {where(graph, importer, imported)}"
        for importer, imported in internal_imports(graph)
        if wing(importer) in FLOOR
        and wing(imported) in FLOOR
        and FLOOR[wing(imported)] < FLOOR[wing(importer)]
    ]
    assert not problems, "upward imports (the floors are LAYERS, from the top):\n" + "\n".join(
        problems
    )


def test_only_the_cli_imports_click_or_argparse(graph):
    problems = [
        f"{module} imports {name}: {where(graph, module, name)}"
        for name in CLI_ONLY
        if name in graph.modules
        for module in sorted(graph.find_modules_that_directly_import(name))
        if module.startswith("keras_ft") and wing(module) != "keras_ft.cli"
    ]
    assert not problems, "command-line code belongs in keras_ft/cli/:\n" + "\n".join(problems)


def test_testing_and_private_api_import_nothing_of_the_cli(graph):
    problems = [
        f"{importer} imports {imported}: {where(graph, importer, imported)}"
        for importer, imported in internal_imports(graph)
        if wing(importer) in ("keras_ft.testing", "keras_ft.private_api")
        and FLOOR.get(wing(imported), len(LAYERS)) <= FLOOR["keras_ft.cli"]
    ]
    assert not problems, "\n".join(problems)


def function_level_imports(source: str):
    """(line, statement text) of each import inside a function body."""
    lines = source.splitlines()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            for inner in ast.walk(node):
                if isinstance(inner, (ast.Import, ast.ImportFrom)):
                    yield inner.lineno, lines[inner.lineno - 1 : inner.end_lineno]


def test_function_level_imports_say_which_heavy_dependency_they_defer():
    problems = sorted(
        {
            f"{path.relative_to(PACKAGE.parent)}:{line}: {text[0].strip()}"
            for path in PACKAGE.rglob("*.py")
            for line, text in function_level_imports(path.read_text())
            if not any(HEAVY_COMMENT.search(t) for t in text)
        }
    )
    assert not problems, (
        "a function-level import must defer a heavy dependency and say which in a "
        "trailing comment (`# heavy: matplotlib`); otherwise import at the top:\n"
        + "\n".join(problems)
    )


def test_the_heavy_import_scan_sees_nested_and_multi_line_imports():
    source = (
        "import os\n\ndef f():\n    def g():\n        import json\n"
        "    from a import (b,  # heavy: a\n        c)\n"
    )
    found = {line: text for line, text in function_level_imports(source)}
    assert sorted(found) == [5, 6]
    assert not HEAVY_COMMENT.search(found[5][0])
    assert any(HEAVY_COMMENT.search(t) for t in found[6])
