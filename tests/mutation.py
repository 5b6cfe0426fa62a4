"""Mutation testing: plant one-line bugs in the core modules, one at a time, and see whether their tests notice.

Run from the repository root (not collected by pytest: the name does not start with ``test_``):

    PYTHONPATH=$PWD OMP_NUM_THREADS=1 OMP_WAIT_POLICY=PASSIVE NO_ALBUMENTATIONS_UPDATE=1 python tests/mutation.py
    python tests/mutation.py --modules targets,decode     # some modules only
    python tests/mutation.py --list                       # print the mutants, run nothing
    python tests/mutation.py --survivors before.log       # only the mutants a previous run printed as SURVIVED
    python tests/mutation.py --modules transforms --lines 101-222   # only the mutants on these lines
    python tests/mutation.py --modules transforms --lines 101-222 --tests tests/test_data_transforms.py
                                        # and only the test files that reach those lines (the same verdicts, faster)

Mutants are enumerated deterministically with ``ast`` (same source, same list, same order): operator swaps
(``+``/``-``, ``*``/``/``, ``<``/``<=``, ``>``/``>=``, ``==``/``!=``, ``is``/``is not``, ``in``/``not in``,
``and``/``or``), a removed ``not`` or unary minus, number tweaks (0 -> 1, 1 -> 0, n -> n + 1), ``True``/``False``,
a dropped ``+ 1``/``- 1``, ``min``/``max`` (also ``minimum``/``maximum``, ``amin``/``amax``, the ``clamp`` keywords),
``floor`` -> ``ceil``/``round``, ``ceil`` -> ``floor``, ``round`` -> ``int``, ``any``/``all``. Strings, docstrings,
f-strings, annotations and ``raise`` statements (error messages) are never mutated.

Each mutant is written into the file, then a forked child (torch and the other heavy libraries already imported by
the parent, ``detector`` not) runs the module's test files with ``pytest -x -q``; bytecode goes to a fresh folder so
no stale ``.pyc`` can hide the mutant. A mutant is *killed* when pytest fails (or times out). The original file is
written back in a ``finally`` after every mutant, and ``git diff`` is checked at the end.
"""
from __future__ import annotations

import argparse
import ast
import copy
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# module -> (file, pytest arguments selecting the tests meant for it)
MODULES = {
    "targets": ("detector/targets.py", ["tests/test_targets.py"]),
    "decode": ("detector/decode.py", ["tests/test_decode.py"]),
    "losses": ("detector/losses.py", ["tests/test_losses.py"]),
    # the PR curves' hand case is in test_plots.py (its training fixture is slow: left out)
    "evaluation": ("detector/evaluation.py", ["tests/test_evaluation.py", "tests/test_plots.py", "-m", "not slow"]),
    "preprocess": ("detector/preprocess.py", ["tests/test_data_transforms.py", "tests/test_preprocess.py"]),
    "boxes": ("detector/boxes.py", ["tests/test_boxes.py"]),
    "transforms": ("detector/data/transforms.py", ["tests/test_data_transforms.py"]),
    "track": ("detector/inference/track.py", ["tests/test_inference_track.py"]),
    "overwrite": ("detector/overwrite.py", ["tests/test_overwrite.py", "-m", "not slow"]),
    "split": ("detector/data/split.py", ["tests/test_data_split.py"]),
    # the labelling tools' exports read end to end (check in process, the data module): fast tests only
    "detect": ("detector/data/detect.py", ["tests/test_data_detect.py", "tests/e2e/test_labelling_tool_exports.py",
                                           "-m", "not slow"]),
    "labelimg": ("detector/data/labelimg.py", ["tests/test_data_labelimg.py",
                                               "tests/e2e/test_labelling_tool_exports.py", "-m", "not slow"]),
    "cache": ("detector/inference/cache.py", ["tests/test_inference_cache.py"]),
}

BINOP_SWAPS = {ast.Add: ast.Sub, ast.Sub: ast.Add, ast.Mult: ast.Div, ast.Div: ast.Mult}
COMPARE_SWAPS = {ast.Lt: ast.LtE, ast.LtE: ast.Lt, ast.Gt: ast.GtE, ast.GtE: ast.Gt, ast.Eq: ast.NotEq,
                 ast.NotEq: ast.Eq, ast.Is: ast.IsNot, ast.IsNot: ast.Is, ast.In: ast.NotIn, ast.NotIn: ast.In}
NAME_SWAPS = {"min": ["max"], "max": ["min"], "minimum": ["maximum"], "maximum": ["minimum"], "amin": ["amax"],
              "amax": ["amin"], "floor": ["ceil", "round"], "ceil": ["floor"], "round": ["int"], "any": ["all"],
              "all": ["any"]}
SYMBOL = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/", ast.Lt: "<", ast.LtE: "<=", ast.Gt: ">",
          ast.GtE: ">=", ast.Eq: "==", ast.NotEq: "!=", ast.Is: "is", ast.IsNot: "is not", ast.In: "in",
          ast.NotIn: "not in", ast.And: "and", ast.Or: "or"}


@dataclass
class Mutant:
    line: int
    change: str  # human-readable, e.g. "+ -> -"
    source: str  # the whole mutated file


def _skipped_nodes(tree: ast.AST) -> set[int]:
    """ids of every node inside a docstring, f-string, annotation or raise statement."""
    skipped: set[int] = set()

    def skip(node):
        if node is not None:
            skipped.update(id(n) for n in ast.walk(node))

    for node in ast.walk(tree):
        if isinstance(node, (ast.JoinedStr, ast.Raise)):
            skip(node)
        elif isinstance(node, ast.arg):
            skip(node.annotation)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            skip(node.returns)
        elif isinstance(node, ast.AnnAssign):
            skip(node.annotation)
        elif isinstance(node, ast.ImportFrom):
            skip(node)
    return skipped


def _variants(node: ast.AST) -> list[tuple[str, ast.AST]]:
    """(description, replacement node) for each mutation of ``node`` itself."""
    out = []
    if isinstance(node, ast.BinOp) and type(node.op) in BINOP_SWAPS:
        new = copy.deepcopy(node)
        new.op = BINOP_SWAPS[type(node.op)]()
        out.append((f"{SYMBOL[type(node.op)]} -> {SYMBOL[type(new.op)]}", new))
        one = lambda n: isinstance(n, ast.Constant) and type(n.value) in (int, float) and n.value == 1
        if one(node.right):
            out.append((f"drop '{SYMBOL[type(node.op)]} 1'", copy.deepcopy(node.left)))
        elif one(node.left) and isinstance(node.op, ast.Add):
            out.append(("drop '1 +'", copy.deepcopy(node.right)))
    elif isinstance(node, ast.Compare):
        for i, op in enumerate(node.ops):
            if type(op) in COMPARE_SWAPS:
                new = copy.deepcopy(node)
                new.ops[i] = COMPARE_SWAPS[type(op)]()
                out.append((f"{SYMBOL[type(op)]} -> {SYMBOL[type(new.ops[i])]}", new))
    elif isinstance(node, ast.BoolOp):
        new = copy.deepcopy(node)
        new.op = ast.Or() if isinstance(node.op, ast.And) else ast.And()
        out.append((f"{SYMBOL[type(node.op)]} -> {SYMBOL[type(new.op)]}", new))
    elif isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.Not, ast.USub)):
        out.append(("drop 'not'" if isinstance(node.op, ast.Not) else "drop unary '-'", copy.deepcopy(node.operand)))
    elif isinstance(node, ast.Constant) and type(node.value) in (int, float, bool):
        value = node.value
        if isinstance(value, bool):
            new_value = not value
        elif value == 0:
            new_value = type(value)(1)
        elif value == 1:
            new_value = type(value)(0)
        else:
            new_value = value + 1
        out.append((f"{value!r} -> {new_value!r}", ast.Constant(new_value)))
    elif isinstance(node, ast.Name) and node.id in NAME_SWAPS:
        out += [(f"{node.id} -> {name}", ast.Name(name, ast.Load())) for name in NAME_SWAPS[node.id]]
    elif isinstance(node, ast.Attribute) and node.attr in NAME_SWAPS:
        for name in NAME_SWAPS[node.attr]:
            new = copy.deepcopy(node)
            new.attr = name
            out.append((f".{node.attr} -> .{name}", new))
    elif isinstance(node, ast.keyword) and node.arg in ("min", "max"):
        new = copy.deepcopy(node)
        new.arg = "max" if node.arg == "min" else "min"
        out.append((f"{node.arg}= -> {new.arg}=", new))
    return out


def _offset(lines: list[str], line: int, col: int) -> int:
    """Character offset of (1-based line, UTF-8 byte column) in the joined source."""
    prefix = lines[line - 1].encode()[:col].decode()
    return sum(len(text) for text in lines[:line - 1]) + len(prefix)


def _replace(source: str, node: ast.AST, replacement: ast.AST) -> str:
    lines = source.splitlines(keepends=True)
    start = _offset(lines, node.lineno, node.col_offset)
    end = _offset(lines, node.end_lineno, node.end_col_offset)
    if isinstance(node, ast.keyword):
        text = f"{replacement.arg}={ast.unparse(replacement.value)}"
    elif isinstance(node, ast.Name):
        text = replacement.id
    else:
        text = f"({ast.unparse(replacement)})"
    return source[:start] + text + source[end:]


def enumerate_mutants(source: str) -> list[Mutant]:
    """Every mutant of ``source``, in AST walk order; each one checked to parse to exactly the intended tree."""
    tree = ast.parse(source)
    skipped = _skipped_nodes(tree)
    mutants = []
    for index, node in enumerate(ast.walk(tree)):
        if id(node) in skipped or not hasattr(node, "lineno"):
            continue
        for change, replacement in _variants(node):
            mutated = _replace(source, node, replacement)
            expected = copy.deepcopy(tree)
            target = list(ast.walk(expected))[index]
            _swap_in(expected, target, replacement)
            if ast.dump(ast.parse(mutated)) != ast.dump(expected):
                raise AssertionError(f"line {node.lineno}: the textual mutant {change!r} does not parse as intended")
            mutants.append(Mutant(node.lineno, change, mutated))
    return sorted(mutants, key=lambda m: m.line)  # stable: walk order within a line


def _swap_in(tree: ast.AST, target: ast.AST, replacement: ast.AST) -> None:
    for parent in ast.walk(tree):
        for field, value in ast.iter_fields(parent):
            if value is target:
                setattr(parent, field, replacement)
                return
            if isinstance(value, list) and any(item is target for item in value):
                value[[i for i, item in enumerate(value) if item is target][0]] = replacement
                return
    raise AssertionError("node not found")


def _preimport() -> None:
    """Import the heavy third-party libraries once, in the parent, so each forked child starts in ~0.1 s."""
    import albumentations  # noqa: F401
    import cv2  # noqa: F401
    import numpy  # noqa: F401
    import pycocotools.cocoeval  # noqa: F401
    import pytest  # noqa: F401
    import pytorch_lightning  # noqa: F401
    import torch
    import torchvision  # noqa: F401

    torch.set_num_threads(1)
    assert not any(name == "detector" or name.startswith("detector.") for name in sys.modules)


def run_tests(args: list[str], timeout: float, log: Path) -> tuple[bool, float]:
    """(passed, seconds) of ``pytest -x -q args`` in a forked child (``-n 0``: in the child itself, no xdist workers); a child
    past ``timeout`` is killed, and its log ends with a ``TIMEOUT`` line."""
    start = time.perf_counter()
    pid = os.fork()
    if pid == 0:  # child
        code = 3
        try:
            import pytest
            import torch

            fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
            os.dup2(fd, 1)
            os.dup2(fd, 2)
            sys.dont_write_bytecode = True
            sys.pycache_prefix = tempfile.mkdtemp(prefix="mutation-pyc-")  # never a stale .pyc of another mutant
            torch.set_num_threads = lambda n: None  # conftest asks for 2 threads; mutation runs keep to 1
            os.chdir(ROOT)
            code = pytest.main(["-x", "-q", "-p", "no:cacheprovider", "-n", "0", *args])
            import detector

            if not Path(detector.__file__).resolve().is_relative_to(ROOT):
                code = 4  # imported another checkout: the result would be meaningless
        finally:
            os._exit(int(code))
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status) == 0, time.perf_counter() - start
        if time.perf_counter() - start > timeout:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            with log.open("a") as file:
                file.write("\nTIMEOUT\n")
            return False, time.perf_counter() - start
        time.sleep(0.05)


def mutate_module(name: str, list_only: bool, log_dir: Path, only: set[str] | None = None,
                  lines: tuple[int, int] | None = None,
                  tests: list[str] | None = None) -> tuple[int, list[tuple[Mutant, str]]]:
    path, args = MODULES[name]
    args = tests or args
    args = [a for a in args if not a.startswith("tests/") or (ROOT / a).is_file()]
    file = ROOT / path
    original = file.read_bytes()
    mutants = enumerate_mutants(original.decode())
    if only is not None:
        mutants = [m for m in mutants if f"{path}:{m.line}: {m.change}" in only]
    if lines is not None:
        mutants = [m for m in mutants if lines[0] <= m.line <= lines[1]]
    if list_only:
        for m in mutants:
            print(f"{path}:{m.line}: {m.change}")
        return len(mutants), []
    ok, baseline = run_tests(args, 600, log_dir / f"{name}-baseline.log")
    if not ok:
        raise SystemExit(f"{name}: the tests fail without any mutant; see {log_dir / f'{name}-baseline.log'}")
    timeout = 3 * baseline + 10
    print(f"{name}: {len(mutants)} mutants, tests {' '.join(args)} ({baseline:.1f} s unmutated)", flush=True)
    survivors, reasons = [], {}
    for i, mutant in enumerate(mutants):
        log = log_dir / f"{name}-{i:03d}.log"
        try:
            file.write_text(mutant.source)
            passed, seconds = run_tests(args, timeout, log)
        finally:
            file.write_bytes(original)
        if passed:
            line = original.decode().splitlines()[mutant.line - 1].strip()
            survivors.append((mutant, line))
            print(f"  SURVIVED {path}:{mutant.line}: {mutant.change}    | {line}", flush=True)
        else:
            reason = kill_reason(log)
            reasons[reason] = reasons.get(reason, 0) + 1
            print(f"  KILLED {path}:{mutant.line}: {mutant.change}    by {reason}", flush=True)
            log.unlink(missing_ok=True)
    timeouts = reasons.pop("timeout", 0)
    killed = len(mutants) - len(survivors) - timeouts
    print(f"{name}: {len(mutants)} mutants: {killed} killed by a failing test, {timeouts} by a timeout, "
          f"{len(survivors)} survived", flush=True)
    for reason, count in sorted(reasons.items(), key=lambda item: -item[1]):
        print(f"  {count:4d} killed by {reason}", flush=True)
    return len(mutants), survivors


def kill_reason(log: Path) -> str:
    """Why a mutant's run failed, from its log: ``timeout``, the first failing test (``-x``: the only one), or the
    error that stopped the run before any test (an import or collection error)."""
    text = log.read_text(errors="replace") if log.exists() else ""
    if text.rstrip().endswith("TIMEOUT"):
        return "timeout"
    for line in text.splitlines():
        if line.startswith(("FAILED ", "ERROR ")):
            return line.split(" - ")[0].split(" ", 1)[1]
    return "an error before any test (import or collection)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--modules", default=",".join(MODULES), help="comma-separated, from: " + ", ".join(MODULES))
    parser.add_argument("--list", action="store_true", help="print the mutants and run nothing")
    parser.add_argument("--survivors", type=Path, help="re-run only the mutants this earlier output lists as SURVIVED "
                                                       "(same source: a mutant is named by file, line and change)")
    parser.add_argument("--lines", help="only mutants on lines FIRST-LAST of each module's file (e.g. new code)")
    parser.add_argument("--tests", help="comma-separated test files to run instead of the module's own (only for "
                                        "--lines that the other files cannot reach: a shortcut, same verdicts)")
    options = parser.parse_args()
    tests = options.tests.split(",") if options.tests else None
    lines = tuple(int(n) for n in options.lines.split("-")) if options.lines else None
    names = options.modules.split(",")
    only = None
    if options.survivors:
        only = {line.split("SURVIVED ", 1)[1].split("    |")[0] for line in options.survivors.read_text().splitlines()
                if "SURVIVED " in line}
    if not options.list:
        _preimport()
    log_dir = Path(tempfile.mkdtemp(prefix="mutation-logs-"))
    summary = []
    start = time.perf_counter()
    try:
        for name in names:
            total, survivors = mutate_module(name, options.list, log_dir, only, lines, tests)
            summary.append((name, total, survivors))
    finally:
        paths = [MODULES[name][0] for name in names]
        diff = subprocess.run(["git", "diff", "--stat", "--", *paths], cwd=ROOT, capture_output=True, text=True)
        if diff.stdout.strip():
            print(f"WARNING: the mutated files differ from git after the run:\n{diff.stdout}")
    if options.list:
        return
    print(f"\n{'module':<12} {'mutants':>7} {'killed':>7} {'survived':>8}")
    for name, total, survivors in summary:
        print(f"{name:<12} {total:>7} {total - len(survivors):>7} {len(survivors):>8}")
    total = sum(t for _, t, _ in summary)
    survived = sum(len(s) for _, _, s in summary)
    print(f"{'all':<12} {total:>7} {total - survived:>7} {survived:>8}   ({time.perf_counter() - start:.0f} s)")
    print("\nsurvivors:")
    for name, _, survivors in summary:
        for mutant, line in survivors:
            print(f"  {MODULES[name][0]}:{mutant.line}: {mutant.change}    | {line}")
    print(f"\nlogs of surviving mutants: {log_dir}; mutated files clean: {not diff.stdout.strip()}")


if __name__ == "__main__":
    main()
