"""The test suite's layout (tests/README.md): no test file imports another, no file named after an issue or
``_more``, every unit test file named for a module of ``detector/``, and every test folder a package."""
import ast
from pathlib import Path

TESTS = Path(__file__).resolve().parent
PACKAGE = TESTS.parent / "detector"
PROJECT_WIDE = {"test_architecture.py", "test_imports.py", "test_suite_layout.py", "test_bench_latency.py",
                "test_bench_peer_train.py"}


def suite_files():
    return sorted(path for path in TESTS.rglob("test_*.py") if "helpers" not in path.parts)


def imported_modules(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            names.add(base)
            names |= {f"{base}.{alias.name}".lstrip(".") for alias in node.names}
    return names


def test_no_test_file_imports_another():
    stems = {path.stem for path in suite_files()} | {"conftest"}
    found = {f"{path.relative_to(TESTS)}: {name}" for path in suite_files() for name in imported_modules(path)
             if name.split(".")[-1] in stems}
    assert not found, f"move what these import to tests/helpers/: {sorted(found)}"


def test_the_import_check_sees_an_import_of_a_test_file(tmp_path):
    path = tmp_path / "test_a.py"
    path.write_text("import os\nfrom test_boxes import make\n\ndef f():\n    from e2e.test_commands import python\n")
    assert {"test_boxes", "e2e.test_commands"} <= imported_modules(path)


def module_of(name: str) -> Path | None:
    """``test_inference_detectors`` -> ``detector/inference/detectors.py`` (or a package folder), if there is one."""
    parts = name.removeprefix("test_").split("_")
    for cut in range(len(parts)):  # the folder may be the first word; module names may hold underscores
        folder, rest = parts[:cut], "_".join(parts[cut:])
        candidate = PACKAGE.joinpath(*folder, rest)
        if candidate.with_suffix(".py").is_file() or (candidate / "__init__.py").is_file():
            return candidate
    return None


def test_every_unit_test_file_is_named_for_a_module():
    flat = [path.name for path in TESTS.glob("test_*.py") if path.name not in PROJECT_WIDE]
    assert not [name for name in flat if module_of(name[:-3]) is None]
    assert module_of("test_inference_detectors") == PACKAGE / "inference" / "detectors"
    assert module_of("test_no_such_module") is None


def test_no_file_is_named_after_an_issue_or_more_and_every_folder_is_a_package():
    names = [path.relative_to(TESTS).as_posix() for path in suite_files()]
    assert not [name for name in names if "issue" in name or name.endswith("_more.py")]
    folders = {path.parent for path in suite_files()} - {TESTS}
    assert all((folder / "__init__.py").is_file() for folder in folders)
