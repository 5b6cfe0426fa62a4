"""The checkpoint's description of the network: one typed record, written and read in one place."""
import os

import pytest
import torch

from detector.checkpoint import CheckpointError, ModelDescription, build_model, load_checkpoint, read_description

DESCRIPTION = ModelDescription(num_classes=2, class_names=["cat", "dog"], category_ids=[3, 17], input_size=128,
                               neck="lean", head_channels=32)


def test_round_trip_through_a_weights_only_file(tmp_path):
    path = tmp_path / "description.pt"
    torch.save({"detector": DESCRIPTION.to_dict()}, path)
    loaded = torch.load(path, weights_only=True)["detector"]
    assert ModelDescription.from_dict(loaded) == DESCRIPTION
    assert all(type(v) in (int, str, list) for v in loaded.values())


def test_the_dict_of_older_checkpoints_still_loads():
    old = {"num_classes": 2, "class_names": ["cat", "dog"], "category_ids": [3, 17], "input_size": 128,
           "neck": "lean", "head_channels": 32, "stride": 4, "mean": [0.485, 0.456, 0.406],
           "std": [0.229, 0.224, 0.225]}  # what module.model_description wrote before 2026-11-23
    assert read_description({"detector": old}) == DESCRIPTION
    minimal = {k: old[k] for k in ("num_classes", "class_names", "input_size", "neck", "head_channels")}
    assert ModelDescription.from_dict(minimal).category_ids == [0, 1]


def test_a_missing_field_is_named():
    with pytest.raises(CheckpointError, match="neck"):
        ModelDescription.from_dict({"num_classes": 2, "class_names": ["a", "b"], "input_size": 64, "head_channels": 8})


def test_build_model_reads_the_description():
    from detector.model import CenterNet

    model = CenterNet(2, neck="lean", weights=None, head_channels=32)
    state = {f"model.{k}": v for k, v in model.state_dict().items()}
    rebuilt = build_model({"detector": DESCRIPTION.to_dict(), "state_dict": state})
    assert rebuilt.head.heatmap[-1].weight.shape[0] == 2


def test_the_normalisation_is_not_stored_and_an_old_one_is_ignored():
    assert not {"mean", "std"} & set(DESCRIPTION.to_dict())
    old = {**DESCRIPTION.to_dict(), "mean": [0.0, 0.0, 0.0], "std": [0.0, 0.0, 0.0]}  # never read at inference
    assert ModelDescription.from_dict(old) == DESCRIPTION


@pytest.mark.parametrize("change, message", [
    ({"class_names": ["cat"]}, "1 class_names for num_classes 2"),
    ({"category_ids": [3, 17, 20]}, "3 category_ids for num_classes 2"),
    ({"input_size": 0}, "input_size 0"),
    ({"input_size": 100}, "input_size 100; it must be a multiple of 32"),
    ({"num_classes": "2"}, "num_classes '2'"),
    ({"head_channels": -1}, "head_channels -1"),
    ({"neck": "transformer"}, "neck 'transformer'"),
    ({"category_ids": ["x", "y"]}, "category_ids that are not integers"),
])
def test_a_description_that_contradicts_itself_is_refused_naming_the_file(tmp_path, change, message):
    from detector.checkpoint import load_checkpoint

    path = tmp_path / "odd.ckpt"
    torch.save({"detector": {**DESCRIPTION.to_dict(), **change}, "state_dict": {}}, path)
    with pytest.raises(CheckpointError, match=message) as error:
        load_checkpoint(path)
    assert str(error.value).startswith(f"{path}: ") and "\n" not in str(error.value)


def test_weights_of_a_foreign_network_name_the_file_and_blame_no_date_alone():
    state = {f"model.{k}": v for k, v in torch.nn.Linear(2, 3).state_dict().items()}
    with pytest.raises(CheckpointError, match=r"^foreign.ckpt: its weights do not fit .*another program") as error:
        build_model({"detector": DESCRIPTION.to_dict(), "state_dict": state}, name="foreign.ckpt")
    assert "\n" not in str(error.value)


def test_bytes_that_do_not_unpickle_are_not_called_code(tmp_path):
    # torch's weights_only loader raises the same UnpicklingError for random bytes and for a pickle naming code:
    # only the second is "refused"; the first is simply not a checkpoint.
    junk = tmp_path / "junk.ckpt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="not a PyTorch checkpoint") as caught:
        load_checkpoint(junk)
    assert "would run code" not in str(caught.value)
    for name, code in (("print", print), ("os.system", os.system)):  # torch words the two refusals differently
        torch.save({"detector": {}, "state_dict": {}, "hook": code}, tmp_path / "code.ckpt")
        with pytest.raises(CheckpointError, match="would run code"):
            load_checkpoint(tmp_path / "code.ckpt")
