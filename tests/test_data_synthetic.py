"""The synthetic set: same seed same bytes, valid COCO json, balanced classes, cache location and atomic writing."""
import hashlib
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from pycocotools.coco import COCO

from detector.data import SYNTHETIC_CLASSES, CocoDetection, synthetic_cache_root, synthetic_dataset


def _digest(folder: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(folder)).encode() + path.read_bytes())
    return digest.hexdigest()


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path):
    first = synthetic_dataset(tmp_path / "a", seed=3, num_train=6, num_val=3)
    again = synthetic_dataset(tmp_path / "b", seed=3, num_train=6, num_val=3)
    other = synthetic_dataset(tmp_path / "c", seed=4, num_train=6, num_val=3)
    assert _digest(first) == _digest(again) != _digest(other)


def test_valid_coco_json_with_varied_sizes_and_in_image_boxes(tmp_path):
    folder = synthetic_dataset(tmp_path, seed=0, num_train=30, num_val=5)
    coco = COCO(str(folder / "annotations" / "instances_train.json"))
    assert [c["name"] for c in coco.loadCats(coco.getCatIds())] == list(SYNTHETIC_CLASSES)
    sizes = {(img["width"], img["height"]) for img in coco.imgs.values()}
    assert len(sizes) > 20 and all(200 <= w <= 320 and 200 <= h <= 320 for w, h in sizes)
    for ann in coco.anns.values():
        image = coco.imgs[ann["image_id"]]
        x, y, w, h = ann["bbox"]
        assert x >= 0 and y >= 0 and x + w <= image["width"] and y + h <= image["height"] and w > 0 and h > 0
    counts = Counter(ann["image_id"] for ann in coco.anns.values())
    assert max(counts.values()) >= 5 and len(counts) < 30  # crowded images and background images
    val = CocoDetection(folder / "annotations" / "instances_val.json", folder / "val")
    assert len(val) == 5 and val[0].image.shape[:2] == (val.annotations[0].height, val.annotations[0].width)


def test_classes_are_roughly_balanced_and_sizes_vary(tmp_path):
    folder = synthetic_dataset(tmp_path, seed=1, num_train=80, num_val=1)
    coco = COCO(str(folder / "annotations" / "instances_train.json"))
    labels = Counter(ann["category_id"] for ann in coco.anns.values())
    total = sum(labels.values())
    assert total > 200 and len(labels) == len(SYNTHETIC_CLASSES)
    assert all(0.7 < count * len(labels) / total < 1.3 for count in labels.values()), labels
    sides = np.array([max(ann["bbox"][2:]) for ann in coco.anns.values()])
    assert sides.min() < 30 and sides.max() > 80


def test_cache_location_from_env_and_reuse(tmp_path, monkeypatch):
    monkeypatch.setenv("DETECTOR_CACHE", str(tmp_path / "cache"))
    assert synthetic_cache_root() == tmp_path / "cache" / "synthetic"
    folder = synthetic_dataset(seed=0, num_train=2, num_val=1)
    assert folder.parent == tmp_path / "cache" / "synthetic"
    stamp = (folder / "annotations" / "instances_train.json").stat().st_mtime_ns
    assert synthetic_dataset(seed=0, num_train=2, num_val=1) == folder
    assert (folder / "annotations" / "instances_train.json").stat().st_mtime_ns == stamp  # not regenerated
    assert [p.name for p in folder.parent.iterdir()] == [folder.name]  # no temporary folder left


def test_interrupted_generation_leaves_no_dataset(tmp_path, monkeypatch):
    import detector.data.synthetic as synthetic

    written = []

    def interrupted(folder, *args):
        (folder / "train").mkdir(parents=True)
        written.append(folder)
        raise KeyboardInterrupt

    monkeypatch.setattr(synthetic, "write_synthetic", interrupted)
    with pytest.raises(KeyboardInterrupt):  # passed on to the caller, not swallowed
        synthetic_dataset(tmp_path, seed=0, num_train=2, num_val=1)
    assert len(written) == 1 and not written[0].exists()  # the half-written folder was there, and is gone
    assert list(tmp_path.iterdir()) == []
