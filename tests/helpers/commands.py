"""Running the commands from the tests: Python in a subprocess with this checkout first on the path, the modules an
import loads, the demo tool, and a detector that stops as Ctrl-C would."""
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent
HEAVY = ("pytorch_lightning", "lightning", "albumentations", "pycocotools")


def python(*args, code=None, timeout=300):
    """Run ``python args`` (or ``python -c code``) with this checkout first on the path, from a neutral folder."""
    env = dict(os.environ, NO_ALBUMENTATIONS_UPDATE="1", PYTHONPATH=str(ROOT))
    command = [sys.executable, "-c", code] if code is not None else [sys.executable, *args]
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=timeout, cwd=ROOT.parent)


def run_tool(script, *args, timeout=600, omp_threads="1", env_extra=None):
    """Run ``tools/<script>`` with ``args`` in a subprocess from the checkout (``omp_threads``: its
    ``OMP_NUM_THREADS``, None to inherit); the ``CompletedProcess`` with text output."""
    env = dict(os.environ, NO_ALBUMENTATIONS_UPDATE="1", PYTHONPATH=str(ROOT), **(env_extra or {}))
    if omp_threads is not None:
        env["OMP_NUM_THREADS"] = omp_threads
    return subprocess.run([sys.executable, str(ROOT / "tools" / script), *args], capture_output=True, text=True,
                          env=env, timeout=timeout, cwd=ROOT)


def run_in_process(capsys, script, *args):
    """``tools/<script>`` with ``args`` run in this process (``detector.cli.run``: no interpreter to start, no imports
    to repeat), its output read from ``capsys``: a ``CompletedProcess`` as :func:`run_tool` returns, exit status
    included (a ``SystemExit`` of a usage error or of an ``error: ...`` message becomes the status, and the message
    stderr, as the interpreter would make them). For the tests whose question is not the entry point itself."""
    from detector.cli import run

    command = Path(script).stem
    capsys.readouterr()
    try:
        status = run(command, [str(arg) for arg in args])
    except SystemExit as stop:
        status = stop.code if isinstance(stop.code, int) else 1
        if isinstance(stop.code, str):
            print(stop.code, file=sys.stderr)
    out, err = capsys.readouterr()
    return subprocess.CompletedProcess([command, *args], status, out, err)


def modules_after(statement):
    result = python(code=f"import json, sys; {statement}; print(json.dumps(sorted(sys.modules)))")
    assert result.returncode == 0, result.stderr
    return set(json.loads(result.stdout))


def run_demo_tool(*args):
    env = dict(os.environ, NO_ALBUMENTATIONS_UPDATE="1", PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, str(ROOT / "tools" / "demo.py"), "--no-show", "--threads", "1", *args],
                          capture_output=True, text=True, env=env, timeout=300, cwd=ROOT)


class InterruptAt:
    """A detector that raises KeyboardInterrupt (as Ctrl-C would) at frame ``stop``."""

    def __init__(self, detector, stop):
        self.detector, self.stop, self.seen = detector, stop, 0
        self.input_size = detector.input_size

    def predict_frame(self, *args, **kwargs):
        self.seen += 1
        if self.seen > self.stop:
            raise KeyboardInterrupt
        return self.detector.predict_frame(*args, **kwargs)
