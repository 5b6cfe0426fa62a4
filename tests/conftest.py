import os

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
# OpenMP threads that spin while waiting make torch 10-50x slower when another process holds a core (measured on a
# shared 2-core machine: 0.66-3.7 s per step with spinning, 0.11 s passive). Read when torch loads, so set it first;
# subprocesses started by the tests inherit it.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
# pytest-xdist runs the suite in WORKERS processes (``-n`` in pyproject.toml): each gets an equal share of the cores
# for torch, and so do the subprocesses its tests start (OMP_NUM_THREADS is read when torch loads).
WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
THREADS = max(1, (os.cpu_count() or 1) // WORKERS) if WORKERS > 1 else 2
if WORKERS > 1:
    os.environ.setdefault("OMP_NUM_THREADS", str(THREADS))

import pytest
import torch


@pytest.fixture(autouse=True, scope="session")
def _exported_network_cache(tmp_path_factory):
    """The tests never write the user's cache of exported networks (``detector.inference.cache``): one folder for
    the session, so equal checkpoints share their exported file; the commands run in subprocesses inherit it."""
    os.environ["DETECTOR_CACHE"] = str(tmp_path_factory.mktemp("exported_networks"))


@pytest.fixture(autouse=True)
def _seed_and_threads():
    torch.manual_seed(0)
    torch.set_num_threads(THREADS)


@pytest.fixture
def one_thread():
    """One torch thread for the test (``pytestmark = pytest.mark.usefixtures("one_thread")``): on a shared 2-core
    machine two OpenMP threads spin against other processes and a forward is up to ~50x slower."""
    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def exported_onnx(tmp_path_factory):
    """The suite's one ONNX export of the standard checkpoint (``helpers.onnx_models.Exported``: checkpoint, file,
    the tool's run), shared by the files that need an exported model."""
    from helpers.onnx_models import export_with_the_tool

    return export_with_the_tool(tmp_path_factory.mktemp("exported_onnx"))
