"""The cache of exported networks: a second build loads the entry instead of exporting, any part of the key that
changes (checkpoint bytes, input size, runtime, versions) misses it, a corrupt entry is exported again with a one-line
note, a failed export leaves nothing under the key, an unwritable folder is skipped with a note."""
from pathlib import Path

import pytest

from detector.inference import cache
from detector.inference.cache import cached_export, entry_key, file_digest
from helpers.checkpoints import make_checkpoint


@pytest.fixture
def folder(tmp_path, monkeypatch):
    monkeypatch.setenv("DETECTOR_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


class Exporter:
    """A fake export (writes ``payload``, counted) and load (reads the file back; refuses anything else)."""

    def __init__(self, payload=b"network"):
        self.payload, self.calls = payload, 0

    def export(self, path: Path) -> None:
        self.calls += 1
        path.write_bytes(self.payload)

    def load(self, path: Path) -> bytes:
        data = path.read_bytes()
        if data != self.payload:
            raise RuntimeError(f"[ONNXRuntimeError] INVALID_PROTOBUF : Load model from {path} failed\nsecond line")
        return data


def test_the_second_build_loads_the_entry_without_exporting(folder):
    exporter = Exporter()
    assert cached_export("k1", exporter.export, exporter.load) == b"network"
    assert cached_export("k1", exporter.export, exporter.load) == b"network"
    assert exporter.calls == 1
    assert [path.name for path in folder.iterdir()] == ["k1.onnx"]  # no temporary file left


def test_another_key_misses(folder):
    exporter = Exporter()
    cached_export("k1", exporter.export, exporter.load)
    cached_export("k2", exporter.export, exporter.load)
    assert exporter.calls == 2


def test_a_corrupt_entry_is_exported_again_with_a_one_line_note(folder, capsys):
    folder.mkdir()
    (folder / "k1.onnx").write_bytes(b"\x00cut")
    exporter = Exporter()
    assert cached_export("k1", exporter.export, exporter.load) == b"network"
    assert exporter.calls == 1 and (folder / "k1.onnx").read_bytes() == b"network"
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "k1.onnx cannot be loaded (" in err and "exporting it again" in err
    assert "Traceback" not in err and "second line" not in err


def test_the_note_cuts_a_long_reason_at_160_characters(folder, capsys):
    folder.mkdir()
    (folder / "k1.onnx").write_bytes(b"\x00cut")
    exporter = Exporter()

    def load(path: Path) -> bytes:
        if path.read_bytes() == b"\x00cut":
            raise RuntimeError("x" * 300)
        return exporter.load(path)

    assert cached_export("k1", exporter.export, load) == b"network"
    assert f"cannot be loaded ({'x' * 160}); exporting it again" in capsys.readouterr().err


def test_a_missing_cache_folder_is_made_with_its_parents(tmp_path, monkeypatch, capsys):
    folder = tmp_path / "home" / ".cache" / "detector" / "exported"
    monkeypatch.setenv("DETECTOR_CACHE", str(folder))
    exporter = Exporter()
    assert cached_export("k1", exporter.export, exporter.load) == b"network"
    assert (folder / "k1.onnx").read_bytes() == b"network" and capsys.readouterr().err == ""


def test_a_failed_export_leaves_nothing_under_the_key(folder):
    def failing(path: Path) -> None:
        path.write_bytes(b"half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        cached_export("k1", failing, Exporter().load)
    assert list(folder.iterdir()) == []


def test_an_unwritable_folder_is_skipped_with_a_note(tmp_path, monkeypatch, capsys):
    (tmp_path / "a_file").write_text("")
    monkeypatch.setenv("DETECTOR_CACHE", str(tmp_path / "a_file" / "cache"))
    exporter = Exporter()
    assert cached_export("k1", exporter.export, exporter.load) == b"network"
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "cannot be written" in err and "set DETECTOR_CACHE" in err


def test_the_folder_is_the_users_cache_unless_the_variable_names_one(monkeypatch, tmp_path):
    monkeypatch.delenv("DETECTOR_CACHE", raising=False)
    assert cache.cache_folder() == Path.home() / ".cache" / "detector" / "exported"
    monkeypatch.setenv("DETECTOR_CACHE", str(tmp_path))
    assert cache.cache_folder() == tmp_path


def test_every_part_of_the_key_changes_it(monkeypatch):
    base = entry_key("abc", 512, "onnxruntime", "1.32.0")
    assert len({base, entry_key("abd", 512, "onnxruntime", "1.32.0"), entry_key("abc", 384, "onnxruntime", "1.32.0"),
                entry_key("abc", 512, "openvino", "1.32.0"), entry_key("abc", 512, "onnxruntime", "1.33.0")}) == 5
    monkeypatch.setattr(cache, "package_version", lambda: "9.9.9")
    assert entry_key("abc", 512, "onnxruntime", "1.32.0") != base
    monkeypatch.setattr(cache, "exporter_version", lambda: "torch 9, runtime.py 0")
    assert entry_key("abc", 512, "onnxruntime", "1.32.0") != base


def test_the_digest_is_of_the_bytes(tmp_path):
    (tmp_path / "a").write_bytes(b"x" * 3_000_000)
    (tmp_path / "b").write_bytes(b"x" * 3_000_000)
    (tmp_path / "c").write_bytes(b"x" * 2_999_999 + b"y")
    assert file_digest(tmp_path / "a") == file_digest(tmp_path / "b") != file_digest(tmp_path / "c")


def test_from_checkpoint_exports_once_per_checkpoint(folder, tmp_path, monkeypatch):
    """Through ``Detector.from_checkpoint(runtime="onnxruntime")``: the second build of a checkpoint traces
    nothing and gives the same detections; another checkpoint's entry is another key."""
    pytest.importorskip("onnxruntime")
    import numpy as np

    from detector import Detector
    from detector.inference import fastest

    traced = []
    trace = fastest.trace_network
    monkeypatch.setattr(fastest, "trace_network", lambda *args: traced.append(args[2]) or trace(*args))
    checkpoint = make_checkpoint(tmp_path / "a.ckpt", seed=0)
    image = np.random.default_rng(0).integers(0, 256, (60, 80, 3), dtype=np.uint8)
    first = Detector.from_checkpoint(checkpoint, runtime="onnxruntime").predict(image)
    assert len(traced) == 1 and len(list(folder.glob("*.onnx"))) == 1
    second = Detector.from_checkpoint(checkpoint, runtime="onnxruntime").predict(image)
    assert len(traced) == 1
    np.testing.assert_array_equal(second.boxes, first.boxes)
    other = make_checkpoint(tmp_path / "b.ckpt", seed=1)
    keys = {entry_key(file_digest(path), 128, "onnxruntime", "1") for path in (checkpoint, other)}
    assert len(keys) == 2
