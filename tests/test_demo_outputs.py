"""The demo's outputs (``detector/demo/outputs.py``): ``--save_json`` (COCO-style, the dataset's category ids),
``--save_txt`` (YOLO labels) and ``--save_mot`` (tracks) read back equal the Python API's detections and tracks, for
a folder and a video; an ``--output`` that would overwrite the source is refused; the device is picked (CUDA when
present) and named on the first line."""
import hashlib
import json

import cv2
import numpy as np
import pytest
import torch

from helpers.checkpoints import make_checkpoint
from helpers.commands import InterruptAt, run_demo_tool
from helpers.images import make_image, write_video
from helpers.onnx_models import identity_onnx

from detector import Detector
from detector.cli import run
from detector.demo.loop import DemoOptions, run_demo
from detector.demo.outputs import open_results
from detector.detections import Detections
from detector.errors import DemoError, DeviceError
from detector.inference.detectors import OnnxDetector, pick_device
from detector.inference.export import export_checkpoint
from detector.inference.sources import open_source
from detector.results import coco_results, yolo_lines

CATEGORY_IDS = [1, 3, 7]  # gapped, as COCO's are: a label written as its category id is caught


pytestmark = pytest.mark.usefixtures("one_thread")  # see tests/conftest.py


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """make_checkpoint's tiny checkpoint (many detections above 0.3), with the dataset's category ids 1, 3, 7 and
    boxes of about 4 x 7 cells (random weights predict sizes near 0, which would hide a swapped w and h)."""
    path = make_checkpoint(tmp_path_factory.mktemp("ckpt") / "model.ckpt")
    state = torch.load(path, weights_only=True)
    state["detector"]["category_ids"] = CATEGORY_IDS
    size_bias = [key for key in state["state_dict"] if key.startswith("model.head.size.") and key.endswith(".bias")]
    state["state_dict"][size_bias[-1]] = torch.tensor([4.0, 7.0])  # the last layer's (w, h) in output cells
    torch.save(state, path)
    return path


@pytest.fixture(scope="module")
def detector(checkpoint):
    return Detector.from_checkpoint(checkpoint)


def image_folder(folder, sizes=((80, 120), (150, 100), (96, 96))):
    folder.mkdir()
    for i, (height, width) in enumerate(sizes):
        cv2.imwrite(str(folder / f"img{i}.png"), make_image(height, width, seed=i))  # png: lossless
    return folder


def read_json(path):
    return json.loads(path.read_text())


def read_txt(path):
    """``[N, 6]`` floats (class cx cy w h score) of one label file."""
    return np.array([[float(v) for v in line.split()] for line in path.read_text().splitlines()]).reshape(-1, 6)


def assert_json_matches(entries, detections: Detections, image_id, file_name, frame=None):
    """The json entries of one image are the API's detections: category ids mapped, bbox xywh in pixels."""
    assert len(entries) == len(detections) > 0
    assert {e["image_id"] for e in entries} == {image_id} and {e["file_name"] for e in entries} == {file_name}
    assert all(e.get("frame") == frame for e in entries)
    assert [e["category_id"] for e in entries] == [CATEGORY_IDS[label] for label in detections.labels]
    x1, y1, x2, y2 = detections.boxes.T
    np.testing.assert_allclose([e["bbox"] for e in entries], np.stack([x1, y1, x2 - x1, y2 - y1], 1), atol=0.006)
    np.testing.assert_allclose([e["score"] for e in entries], detections.scores, atol=1e-5)


def assert_txt_matches(rows, detections: Detections, width, height):
    """The label file's rows are the API's detections: class = label, centre and size / the image size."""
    assert len(rows) == len(detections) > 0
    np.testing.assert_array_equal(rows[:, 0], detections.labels)
    x1, y1, x2, y2 = detections.boxes.T
    expected = np.stack([(x1 + x2) / 2 / width, (y1 + y2) / 2 / height, (x2 - x1) / width, (y2 - y1) / height], 1)
    np.testing.assert_allclose(rows[:, 1:5], expected, atol=2e-6)
    np.testing.assert_allclose(rows[:, 5], detections.scores, atol=1e-5)


def digest(folder):
    return {path.name: hashlib.sha256(path.read_bytes()).hexdigest() for path in sorted(folder.iterdir())
            if path.is_file()}


def demo(capsys, *args):
    """``centernet demo`` in this process: (exit status, stdout lines, stderr lines without the progress bar)."""
    code = run("demo", ["--no-show", "--threads", "1", *map(str, args)])
    out, err = capsys.readouterr()
    return code, out.splitlines(), [line for line in err.splitlines() if "frame/s" not in line and "%|" not in line]


# the formats, by hand ---------------------------------------------------------------------------------------------

def test_one_box_in_both_formats_by_hand():
    found = Detections(np.array([[10.0, 20.0, 50.0, 60.0]], dtype=np.float32), np.array([0.75], dtype=np.float32),
                       np.array([2]), np.array(["bird"]))
    assert coco_results(found, 4, CATEGORY_IDS, "a.jpg") == [
        {"image_id": 4, "category_id": 7, "bbox": [10.0, 20.0, 40.0, 40.0], "score": 0.75, "file_name": "a.jpg"}]
    assert coco_results(found, 4, CATEGORY_IDS, "v.mp4", frame=4)[0]["frame"] == 4
    # 100 wide, 200 high: centre (30, 40) -> (0.3, 0.2), size (40, 40) -> (0.4, 0.2)
    assert yolo_lines(found, 100, 200) == ["2 0.300000 0.200000 0.400000 0.200000 0.75000"]
    assert yolo_lines(found, 100, 200, scores=False) == ["2 0.300000 0.200000 0.400000 0.200000"]


# a folder, through the command in a subprocess ----------------------------------------------------------------------

@pytest.mark.slow
def test_folder_json_and_txt_read_back_equal_the_python_api(checkpoint, detector, tmp_path):
    folder = image_folder(tmp_path / "images")
    result = run_demo_tool("--checkpoint", str(checkpoint), "--source", str(folder), "--output", str(tmp_path / "out"),
                           "--device", "cpu",
                           "--save_json", str(tmp_path / "results.json"), "--save_txt", str(tmp_path / "labels"))
    assert result.returncode == 0, result.stderr
    # the default runtime ("auto") on a CPU: ONNX Runtime, installed with the tests
    assert result.stdout.splitlines()[0] == "device: cpu (1 thread); torch backend, fp32, network run by onnxruntime"
    entries = read_json(tmp_path / "results.json")
    assert sorted(path.name for path in (tmp_path / "labels").iterdir()) == ["img0.txt", "img1.txt", "img2.txt"]
    for image_id, path in enumerate(sorted(folder.iterdir())):
        expected = detector.predict(path)
        height, width = cv2.imread(str(path)).shape[:2]
        assert_json_matches([e for e in entries if e["file_name"] == path.name], expected, image_id, path.name)
        assert_txt_matches(read_txt(tmp_path / "labels" / f"{path.stem}.txt"), expected, width, height)
    assert sorted(path.name for path in (tmp_path / "out").iterdir()) == ["img0.png", "img1.png", "img2.png"]
    assert_pycocotools_reads(tmp_path / "results.json", folder)


def assert_pycocotools_reads(results, folder):
    """The json is a COCO results file: ``COCO.loadRes`` takes it against ground truth of these images and ids."""
    from pycocotools.coco import COCO

    gt = COCO()
    gt.dataset = {"images": [{"id": i, "file_name": p.name} for i, p in enumerate(sorted(folder.iterdir()))],
                  "categories": [{"id": i, "name": str(i)} for i in CATEGORY_IDS], "annotations": []}
    gt.createIndex()
    loaded = gt.loadRes(str(results))
    assert len(loaded.getAnnIds()) == len(read_json(results)) and set(loaded.getCatIds()) == set(CATEGORY_IDS)


# a video, through the command in this process -----------------------------------------------------------------------

def test_video_json_and_txt_per_frame_equal_predict_many(checkpoint, detector, tmp_path, capsys):
    video = write_video(tmp_path / "clip.mp4", frames=4)
    code, out, err = demo(capsys, "--checkpoint", checkpoint, "--source", video, "--output", tmp_path / "out.mp4",
                          "--device", "cpu",
                          "--save_json", tmp_path / "r" / "clip.json", "--save_txt", tmp_path / "labels",
                          "--conf", 0.35, "--classes", "dog", "bird")
    assert code == 0, err
    assert out[0].startswith("device: cpu")
    entries = read_json(tmp_path / "r" / "clip.json")
    expected = list(detector.predict_many(video, batch_size=3, conf=0.35, classes=["dog", "bird"]))
    assert [p.name for p in expected] == [0, 1, 2, 3]
    assert sorted(path.name for path in (tmp_path / "labels").iterdir()) == [f"clip_{i:06d}.txt" for i in range(4)]
    for frame, found in expected:
        assert_json_matches([e for e in entries if e["frame"] == frame], found, frame, "clip.mp4", frame)
        assert_txt_matches(read_txt(tmp_path / "labels" / f"clip_{frame:06d}.txt"), found, 160, 120)
    assert {e["category_id"] for e in entries} <= {3, 7}  # dog and bird only


def read_mot(path):
    """``[N, 10]`` floats of a MOTChallenge file (frame, id, x, y, w, h, score, -1, -1, -1)."""
    return np.array([[float(v) for v in line.split(",")] for line in path.read_text().splitlines()]).reshape(-1, 10)


def test_video_tracks_in_mot_and_json_equal_detector_track(checkpoint, detector, tmp_path, capsys):
    video = write_video(tmp_path / "clip.mp4", frames=5)
    code, out, err = demo(capsys, "--checkpoint", checkpoint, "--source", video, "--device", "cpu", "--track",
                          "--save_mot", tmp_path / "tracks.txt", "--save_json", tmp_path / "clip.json")
    assert code == 0, err
    assert out[-1] == f"tracks: {tmp_path / 'tracks.txt'}" and any(line.lstrip().startswith("track ") for line in out)
    rows, entries = read_mot(tmp_path / "tracks.txt"), read_json(tmp_path / "clip.json")
    expected = list(detector.track(video, batch_size=2))
    assert sorted(set(rows[:, 0].astype(int))) == [1, 2, 3, 4, 5]  # MOTChallenge counts frames from 1
    for frame, found in expected:
        mine = rows[rows[:, 0] == frame + 1]
        assert len(mine) == len(found) > 0
        np.testing.assert_array_equal(mine[:, 1], found.track_ids)
        x1, y1, x2, y2 = found.boxes.T
        np.testing.assert_allclose(mine[:, 2:6], np.stack([x1, y1, x2 - x1, y2 - y1], 1), atol=0.006)
        np.testing.assert_allclose(mine[:, 6], found.scores, atol=1e-5)
        assert [e["track_id"] for e in entries if e["frame"] == frame] == found.track_ids.tolist()
    first, last = set(expected[0].detections.track_ids), set(expected[-1].detections.track_ids)
    assert len(first & last) >= len(first) // 2  # a still scene: most objects keep their id to the end


def test_an_existing_mot_file_is_kept_without_exist_ok(checkpoint, tmp_path, capsys):
    video = write_video(tmp_path / "clip.mp4", frames=2)
    (tmp_path / "tracks.txt").write_text("mine\n")
    code, _, err = demo(capsys, "--checkpoint", checkpoint, "--source", video, "--track", "--save_mot",
                        tmp_path / "tracks.txt")
    assert code == 1 and err == [f"error: --save_mot {tmp_path / 'tracks.txt'} exists; give another path, or "
                                 "--exist_ok true to replace it"]
    assert (tmp_path / "tracks.txt").read_text() == "mine\n"


def test_the_json_is_valid_after_ctrl_c(detector, tmp_path):
    source = open_source(str(write_video(tmp_path / "in.mp4", frames=6)))
    results = open_results(source, tmp_path / "r.json", None, detector.category_ids)
    report = run_demo(InterruptAt(detector, 2), source, None, DemoOptions(), results)
    assert report.stopped == "interrupted"
    assert {e["frame"] for e in read_json(tmp_path / "r.json")} == {0, 1}


def test_txt_scores_false_writes_plain_yolo_labels(checkpoint, tmp_path, capsys):
    folder = image_folder(tmp_path / "images", sizes=((64, 64),))
    code, _, err = demo(capsys, "--checkpoint", checkpoint, "--source", folder, "--save_txt", tmp_path / "labels",
                        "--txt_scores", "false")
    assert code == 0, err
    lines = (tmp_path / "labels" / "img0.txt").read_text().splitlines()
    assert lines and all(len(line.split()) == 5 for line in lines)


def test_images_sharing_a_stem_are_refused_before_any_work(tmp_path):
    folder = image_folder(tmp_path / "images", sizes=((40, 40),))
    cv2.imwrite(str(folder / "img0.jpg"), make_image(40, 40))
    with pytest.raises(DemoError, match=r"--save_txt: .*img0\.jpg and .*img0\.png would both write img0\.txt"):
        open_results(open_source(str(folder)), None, tmp_path / "labels", CATEGORY_IDS)
    assert not (tmp_path / "labels").exists()


def test_an_onnx_export_carries_the_category_ids(checkpoint, tmp_path, monkeypatch):
    # the metadata is export_onnx's: a one-node graph stands in for the network (torch's exporter takes seconds)
    monkeypatch.setattr("detector.inference.export.trace_onnx", lambda module, example, path, *args, **kwargs:
                        identity_onnx(path, example.shape[-1]))
    assert OnnxDetector(export_checkpoint(checkpoint, "onnx", tmp_path / "m.onnx")).category_ids == CATEGORY_IDS
    with pytest.raises(DemoError, match="--save_json .* category ids"):
        open_results(open_source(str(image_folder(tmp_path / "images"))), tmp_path / "r.json", None, None)


# outputs that would overwrite the source ----------------------------------------------------------------------------

@pytest.mark.slow
def test_an_output_folder_equal_to_the_source_folder_is_refused(checkpoint, tmp_path):
    folder = image_folder(tmp_path / "images")
    (folder / "sub").mkdir()
    before = digest(folder)
    result = run_demo_tool("--checkpoint", str(checkpoint), "--source", str(folder), "--output",
                           str(folder / "sub" / ".."))  # another spelling of the same folder
    assert result.returncode == 1
    assert result.stderr.strip().count("\n") == 0 and result.stderr.startswith("error: --output ")
    assert "source folder" in result.stderr and "give another folder" in result.stderr
    assert digest(folder) == before


@pytest.mark.parametrize("case", ["image", "video", "json"])
def test_an_output_that_is_a_source_file_is_refused(case, checkpoint, tmp_path, capsys):
    if case == "video":
        source = write_video(tmp_path / "in.mp4", frames=2)
        flag = "--output"
    else:
        source = image_folder(tmp_path / "images", sizes=((40, 40),)) / "img0.png"
        flag = "--output" if case == "image" else "--save_json"
    before = source.read_bytes()
    code, out, err = demo(capsys, "--checkpoint", checkpoint, "--source", source, flag, source)
    assert code == 1 and len(err) == 1 and err[0].startswith(f"error: {flag} {source} is the source")
    assert source.read_bytes() == before


# the device ---------------------------------------------------------------------------------------------------------

def test_the_device_is_cuda_when_present_else_the_cpu_and_an_explicit_one_is_kept(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert pick_device(None) == pick_device("auto") == pick_device() == torch.device("cuda")
    assert pick_device("auto", onnxruntime=True) == torch.device("cpu")  # int8 and runtime='onnxruntime'
    assert pick_device("cpu") == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert pick_device(None) == torch.device("cpu")
    with pytest.raises(DeviceError, match="--device cuda:0: CUDA is not available"):
        pick_device("cuda:0", name="--device")
    with pytest.raises(DeviceError, match="--device gpu: not a torch device"):
        pick_device("gpu", name="--device")


def test_the_demo_runs_the_runtime_asked_for_and_names_it(checkpoint, tmp_path, capsys):
    """``--runtime openvino`` (the flag's other choices: auto, the default, torch, onnxruntime) runs the network in
    OpenVINO on the CPU and says so in the first line."""
    pytest.importorskip("openvino")
    image = tmp_path / "a.png"
    cv2.imwrite(str(image), make_image(64, 64))
    code, out, err = demo(capsys, "--checkpoint", checkpoint, "--source", image, "--runtime", "openvino")
    assert code == 0, err
    assert out[0] == "device: cpu (1 thread); torch backend, fp32, network run by openvino"


def test_from_checkpoint_and_the_demo_follow_one_device_rule(tmp_path, capsys, monkeypatch):
    checkpoint = make_checkpoint(tmp_path / "model.ckpt")
    picked = []

    def recording(device="auto", onnxruntime=False, name="device"):
        picked.append((device, onnxruntime))
        return torch.device("cpu")

    monkeypatch.setattr("detector.inference.detectors.pick_device", recording)
    with monkeypatch.context() as stubbed:  # no export: the device is the question
        stubbed.setattr("detector.inference.detectors.runtime_network", lambda *args, **kwargs: None)
        Detector.from_checkpoint(checkpoint)
        Detector.from_checkpoint(checkpoint, runtime="onnxruntime")
    assert picked == [("auto", False), ("auto", True)]
    picked.clear()
    image = tmp_path / "a.png"
    cv2.imwrite(str(image), make_image(64, 64))
    code, out, err = demo(capsys, "--checkpoint", checkpoint, "--source", image, "--runtime", "torch")
    assert code == 0 and picked[0] == (None, False), (picked, err)  # no --device: the same "auto"
