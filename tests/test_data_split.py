"""The held-out validation split (``detector/data/split.py``): the hash fraction by hand, the fraction rule and its
bounds, neither side empty, the recorded names reused, the two lists and the one line."""
import hashlib
from pathlib import Path

import numpy as np
import pytest

from detector.data.dataset import Annotation, DetectionDataset
from detector.data.split import (hashed_validation, name_fraction, split_dataset, split_message, split_record,
                                 write_split_lists)
from detector.errors import DatasetError

NAMES = [f"photo_{i:03d}.jpg" for i in range(200)]


def dataset(names, folder=Path("/data/photos")):
    empty = np.zeros((0, 4), np.float32)
    annotations = [Annotation(folder / name, i, empty, np.zeros(0, np.int64), empty, np.zeros(0, np.int64), 64, 48)
                   for i, name in enumerate(names)]
    return DetectionDataset(annotations, ["cell"], [1], "photos")


def test_the_fraction_is_the_first_8_bytes_of_the_sha1_over_2_to_the_64():
    digest = hashlib.sha1(b"photo_000.jpg").digest()
    by_hand = sum(byte << (8 * (7 - i)) for i, byte in enumerate(digest[:8])) / 18446744073709551616
    assert name_fraction("photo_000.jpg") == by_hand
    fractions = [name_fraction(name) for name in NAMES]
    assert all(0.0 <= f < 1.0 for f in fractions) and 0.4 < np.mean(fractions) < 0.6  # spread over [0, 1)


def test_a_photo_is_held_out_when_its_fraction_is_below_val_fraction():
    chosen = hashed_validation(NAMES, 0.2)
    assert chosen == [name_fraction(name) < 0.2 for name in NAMES]
    assert 25 <= sum(chosen) <= 55  # about a fifth of 200
    # adding photos moves none of the old ones
    assert hashed_validation(NAMES + ["new_1.jpg", "new_2.jpg"], 0.2)[:200] == chosen


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.1, 1.5])
def test_a_fraction_outside_0_1_is_refused_naming_the_flag(fraction):
    with pytest.raises(DatasetError, match=r"--data.val_fraction .*between 0 and 1"):
        hashed_validation(NAMES, fraction)


def test_neither_side_is_empty_for_two_photos_or_more():
    low, high = sorted(NAMES[:5], key=name_fraction)[0], sorted(NAMES[:5], key=name_fraction)[-1]
    tiny = 1e-9  # below every fraction: the lowest one is moved to validation
    chosen = hashed_validation(NAMES[:5], tiny)
    assert sum(chosen) == 1 and chosen[NAMES[:5].index(low)]
    chosen = hashed_validation(NAMES[:5], 1 - tiny)  # above every fraction: the highest one stays in train
    assert sum(chosen) == 4 and not chosen[NAMES[:5].index(high)]
    assert hashed_validation(NAMES[:1], tiny) == [False]  # one photo: nothing to move (split_dataset refuses it)
    assert hashed_validation(NAMES[:1], 1 - tiny) == [True]
    two = sorted(NAMES[:2], key=name_fraction)  # exactly two photos: one each side, whatever the fraction
    for fraction in (tiny, 1 - tiny):
        chosen = hashed_validation(two, fraction)
        assert chosen == [True, False], fraction  # the lower hash validates, the higher trains


def test_split_dataset_by_hash_or_by_the_recorded_names(tmp_path):
    full = dataset(NAMES[:20])
    train, val = split_dataset(full, 0.3)
    expected = hashed_validation(NAMES[:20], 0.3)
    assert [a.file.name for a in val.annotations] == [n for n, v in zip(NAMES[:20], expected) if v]
    assert [a.file.name for a in train.annotations] == [n for n, v in zip(NAMES[:20], expected) if not v]
    record = split_record(train, val)
    assert record == {"train": [a.file.name for a in train.annotations], "val": [a.file.name for a in val.annotations]}
    # a photo added since the run trains; the recorded validation photos stay validation
    train2, val2 = split_dataset(dataset(NAMES[:20] + ["added.jpg"]), 0.9, recorded_val=record["val"])
    assert [a.file.name for a in val2.annotations] == record["val"]
    assert [a.file.name for a in train2.annotations] == record["train"] + ["added.jpg"]
    with pytest.raises(DatasetError, match=r"photos: no image for the held-out validation split \(1 images"):
        split_dataset(dataset(NAMES[:1]), 0.2)
    write_split_lists(train, val, tmp_path / "runs" / "run")  # a folder made with its parents, then written again
    paths = write_split_lists(train, val, tmp_path / "runs" / "run")
    assert [p.name for p in paths] == ["split_train.txt", "split_val.txt"]
    assert paths[1].read_text().splitlines() == [str(a.file) for a in val.annotations]
    assert paths[0].read_text().splitlines() == [str(a.file) for a in train.annotations]
    line = split_message("photos", train, val, 0.3, recorded=False)
    assert line.startswith(f"split: photos has no validation split; {len(val)} of 20 images held out for "
                           f"validation, {len(train)} train (--data.val_fraction 0.3")
