"""Import weight of ``from detector import Detector``: seconds and heavy modules loaded, median of 5 fresh processes.

    python bench/import_time.py

Each probe runs in a fresh interpreter started in the temporary folder, so the copy of ``detector`` imported is
the installed one, or the one ``PYTHONPATH`` names (``PYTHONPATH=/path/to/checkout python bench/import_time.py``).
"""
from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile

PROBE = ("import json, sys, time; t = time.perf_counter(); from detector import Detector; "
         "s = time.perf_counter() - t; heavy = ('pytorch_lightning', 'lightning', 'albumentations', 'pycocotools'); "
         "print(json.dumps({'seconds': s, 'heavy': [m for m in heavy if m in sys.modules], "
         "'package': __import__('detector').__file__}))")


def measure(runs: int = 5) -> dict:
    env = dict(os.environ, NO_ALBUMENTATIONS_UPDATE="1", OMP_WAIT_POLICY="PASSIVE")
    samples = [json.loads(subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, env=env,
                                         cwd=tempfile.gettempdir(), check=True).stdout) for _ in range(runs)]
    return {"median_s": statistics.median(s["seconds"] for s in samples),
            "runs_s": [round(s["seconds"], 3) for s in samples], "heavy": samples[0]["heavy"],
            "package": samples[0]["package"]}


if __name__ == "__main__":
    print(json.dumps(measure(), indent=1))
