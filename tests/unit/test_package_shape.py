"""The package's shape: named SQL in step with the code, no import cycle,
small modules. Read from the source (ast), nothing is run."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from acode_sync import queries

PACKAGE = Path(__file__).resolve().parents[2] / "acode_sync"
MAX_LINES = 400


def modules() -> dict[str, Path]:
    """Dotted module name -> file, for every module of the package."""
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


def query_calls(tree: ast.AST) -> list[ast.Call]:
    return [
        node
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and (
            (isinstance(node.func, ast.Name) and node.func.id == "query")
            or (isinstance(node.func, ast.Attribute) and node.func.attr == "query")
        )
    ]


def test_every_named_query_is_used_and_every_used_name_exists() -> None:
    used: set[str] = set()
    for name, path in modules().items():
        for call in query_calls(ast.parse(path.read_text(encoding="utf-8"))):
            arg = call.args[0] if len(call.args) == 1 and not call.keywords else None
            assert isinstance(arg, ast.Constant) and isinstance(arg.value, str), (
                f"{name}:{call.lineno}: query() takes one literal name, so that this test sees it"
            )
            used.add(arg.value)
    defined = set(queries.local_queries())
    assert used - defined == set(), "used but not in sql/sqlite/queries.sql"
    assert defined - used == set(), "in sql/sqlite/queries.sql but never used"


def test_an_unknown_query_name_fails_loudly() -> None:
    with pytest.raises(LookupError, match="no query 'no_such_query'"):
        queries.query("no_such_query")


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("-- name: a\nSELECT 1;\n-- name: a\nSELECT 2;\n", "defined twice"),
        ("-- name: a\n-- only a comment\n", "no statement"),
    ],
)
def test_a_broken_query_file_is_refused(text: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        queries.parse(text)


def test_a_statement_ends_at_its_semicolon_and_keeps_no_comments_around_it() -> None:
    text = "-- header\n-- name: a\n-- what a does\nSELECT 1\n  FROM t;\n-- next section\n"
    assert queries.parse(text) == {"a": "SELECT 1\n  FROM t"}


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """The package's modules that ``name`` imports, at any level (function
    bodies included). ``from pkg import mod`` counts as importing ``pkg.mod``;
    parent packages, which Python initializes first anyway, are not counted."""
    found: set[str] = set()
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name in known)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            for alias in node.names:
                if f"{base}.{alias.name}" in known:
                    found.add(f"{base}.{alias.name}")
                elif base in known:
                    found.add(base)
    found.discard(name)
    return found


def test_no_import_cycle_in_the_package() -> None:
    mods = modules()
    graph = {name: imports_of(name, path, set(mods)) for name, path in mods.items()}
    done: set[str] = set()

    def visit(name: str, trail: list[str]) -> None:
        if name in trail:
            cycle = [*trail[trail.index(name) :], name]
            pytest.fail("import cycle: " + " -> ".join(cycle))
        if name in done:
            return
        for target in sorted(graph[name]):
            visit(target, [*trail, name])
        done.add(name)

    for name in sorted(graph):
        visit(name, [])


def test_the_cycle_check_sees_a_cycle_through_a_function_level_import(tmp_path: Path) -> None:
    a = tmp_path / "a.py"
    a.write_text("def f():\n    from pkg import b\n", encoding="utf-8")
    assert imports_of("pkg.a", a, {"pkg", "pkg.a", "pkg.b"}) == {"pkg.b"}


def test_no_module_is_over_400_lines() -> None:
    long = {
        name: lines
        for name, path in modules().items()
        if (lines := len(path.read_text(encoding="utf-8").splitlines())) > MAX_LINES
    }
    assert long == {}
