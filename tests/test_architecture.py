"""ARCHITECTURE.md stays true: its layout tree names every module of ``detector/`` and nothing that is gone, and
every module opens with a docstring whose first line says what it holds."""
import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "detector"
# A tree line: two spaces per level, then a file or folder name (folders end in "/"), then its description.
TREE_LINE = re.compile(r"^(?P<indent>(?:  )*)(?P<name>[\w.-]+/|[\w.-]+\.py)(?:\s|$)")


def layout_block(text: str) -> list[str]:
    """The lines of the first fenced block under the ``## Layout`` heading."""
    section = text.split("## Layout", 1)[1]
    return section.split("```", 2)[1].splitlines()[1:]


def named_paths(lines: list[str]) -> set[str]:
    """The ``detector/...`` paths the tree names, each rebuilt from the folders above it (by indentation)."""
    folders: list[str] = []
    paths = set()
    for line in lines:
        match = TREE_LINE.match(line)
        if match is None or len(match["indent"]) > 16:  # a description's continuation line
            continue
        depth = len(match["indent"]) // 2
        del folders[depth:]
        name = match["name"]
        if name.endswith("/"):
            folders.append(name.rstrip("/"))
        else:
            paths.add("/".join([*folders, name]))
    return {path for path in paths if path.startswith("detector/")}


def package_modules() -> set[str]:
    return {path.relative_to(ROOT).as_posix() for path in PACKAGE.rglob("*.py")}


def test_the_tree_parser_rebuilds_nested_paths():
    lines = ["detector/", "  a.py        x", "  sub/", "    b.py      y", "                            c.py (prose)",
             "  d.py", "tools/", "  e.py"]
    assert named_paths(lines) == {"detector/a.py", "detector/sub/b.py", "detector/d.py"}


def test_architecture_names_every_module_and_only_modules_that_exist():
    named = named_paths(layout_block((ROOT / "ARCHITECTURE.md").read_text(encoding="utf-8")))
    actual = package_modules()
    assert not actual - named, f"modules missing from ARCHITECTURE.md's layout: {sorted(actual - named)}"
    assert not named - actual, f"ARCHITECTURE.md names modules that do not exist: {sorted(named - actual)}"


def test_every_module_opens_with_a_one_line_summary():
    missing = []
    for path in sorted(PACKAGE.rglob("*.py")):
        docstring = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8")))
        if not docstring or not docstring.splitlines()[0].strip():
            missing.append(path.relative_to(ROOT).as_posix())
    assert not missing, f"modules without a docstring saying what they hold: {missing}"
