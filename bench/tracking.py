"""Tracking quality and cost: the tracker (``detector.inference.track``) on a synthetic video with known identities.

The scene: ``--objects`` coloured rectangles and ellipses of random sizes moving at constant speed (bouncing off
the borders), each at its own depth, so they cross and hide behind each other, and two grey pillars in front of
everything that they pass behind. The video is written as an mp4 (``--video``, else a temporary file). The ground
truth of a frame is the full box of every object at least ``--min_visible`` visible (its visible pixel fraction,
from a label map drawn in the same depth order), with the object's identity.

Detections:

- ``noisy ground truth`` (always): each ground-truth box jittered (3% of its size), missed with probability
  ``--miss`` plus more the more it is hidden, scored ``0.35 + 0.6 x visibility`` plus noise (a half-hidden object
  scores low, where ByteTrack's second stage matters), plus about ``--false`` false boxes a frame scored 0.1-0.6.
  The tracker alone is measured.
- ``checkpoint`` (with ``--checkpoint``): the detector's boxes on the video's frames (down to the tracker's low
  threshold, as the demo asks for them with ``--track``), class-agnostic.

Each set of detections is tracked twice: ``ByteTrack`` (``high`` = ``--conf``, ``low`` 0.1) and ``high only`` (the
low-score boxes dropped: ``low`` = ``high``), to show what the second stage does. Scored with ``motmetrics`` (IDF1,
MOTA, identity switches; a match is IoU >= 0.5, the MOTChallenge rule), which needs pandas; both are for this
benchmark only (``pip install motmetrics pandas``). motmetrics 1.4's own IoU helper calls a function numpy 2
removed, so the distances are computed here (``detector.boxes.iou_xyxy``) and handed to its accumulator.

Cost: the demo's frame time (``detector.demo.loop.run_demo`` headless over the video, no output, every stage but
``track``) and the tracker's time per frame: with ``--checkpoint``, the demo's own ``track`` stage in the same run
(``--track``); without, a random-initialised network of ``--input_size`` gives the frame time (speed does not
depend on the weights; its junk boxes would not be a tracking load) and the tracker's time is its time on the
noisy ground truth. The last line gives the tracker's share of the frame time (the issue asks for under 5%).

    NO_ALBUMENTATIONS_UPDATE=1 python bench/tracking.py --frames 600 --objects 10 --threads 2
    NO_ALBUMENTATIONS_UPDATE=1 python bench/tracking.py --frames 600 --checkpoint runs/.../last.ckpt
    python bench/tracking.py --frames 30 --objects 4 --timing_frames 10     # a quick check of the script
"""
from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # see bench/latency.py: spinning OpenMP threads on a busy CPU

import argparse  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from detector.boxes import iou_xyxy  # noqa: E402
from detector.detections import Detections  # noqa: E402
from detector.inference.track import LOW_SCORE, Tracker  # noqa: E402

PILLAR_COLOUR = (90, 90, 90)


# the scene ----------------------------------------------------------------------------------------------------------

@dataclass
class Scene:
    """Per frame: the RGB image, the ground truth (``ids [K]``, full ``boxes [K, 4]`` xyxy, ``visible [K]``)."""

    images: list[np.ndarray]
    ids: list[np.ndarray]
    boxes: list[np.ndarray]
    visible: list[np.ndarray]


def make_scene(frames: int, objects: int, width: int, height: int, min_visible: float, seed: int) -> Scene:
    rng = np.random.default_rng(seed)
    size = rng.uniform(30, 80, (objects, 2))
    position = rng.uniform(size / 2, [width, height] - size / 2)
    speed, angle = rng.uniform(1, 4, objects), rng.uniform(0, 2 * np.pi, objects)
    velocity = np.stack([speed * np.cos(angle), speed * np.sin(angle)], axis=1)
    colours = [tuple(int(c) for c in rng.integers(60, 256, 3)) for _ in range(objects)]
    ellipse = rng.random(objects) < 0.5
    depth_order = rng.permutation(objects)  # far to near
    pillars = [(int(width * x), 0, int(width * x) + width // 12, height) for x in (0.3, 0.65)]
    scene = Scene([], [], [], [])
    for _ in range(frames):
        image = np.full((height, width, 3), 30, dtype=np.uint8)
        labels = np.full((height, width), -1, dtype=np.int32)
        boxes = np.concatenate([position - size / 2, position + size / 2], axis=1)
        for i in depth_order:
            x1, y1, x2, y2 = (int(round(v)) for v in boxes[i])
            for target, value in ((image, colours[i]), (labels, int(i))):
                if ellipse[i]:
                    cv2.ellipse(target, (((x1 + x2) / 2, (y1 + y2) / 2), (x2 - x1, y2 - y1), 0), value, cv2.FILLED)
                else:
                    cv2.rectangle(target, (x1, y1), (x2 - 1, y2 - 1), value, cv2.FILLED)
        for x1, y1, x2, y2 in pillars:
            image[y1:y2, x1:x2] = PILLAR_COLOUR
            labels[y1:y2, x1:x2] = -1
        area = np.maximum(np.bincount((labels + 1).ravel(), minlength=objects + 1)[1:], 0)
        full = np.array([_full_area(boxes[i], ellipse[i]) for i in range(objects)])
        visible = np.clip(area / np.maximum(full, 1), 0, 1)
        keep = visible >= min_visible
        scene.images.append(image)
        scene.ids.append(np.flatnonzero(keep))
        scene.boxes.append(boxes[keep].astype(np.float32))
        scene.visible.append(visible[keep])
        position += velocity
        for axis, limit in ((0, width), (1, height)):  # bounce off the borders
            out = (position[:, axis] - size[:, axis] / 2 < 0) | (position[:, axis] + size[:, axis] / 2 > limit)
            velocity[out, axis] *= -1
            position[:, axis] = np.clip(position[:, axis], size[:, axis] / 2, limit - size[:, axis] / 2)
    return scene


def _full_area(box: np.ndarray, ellipse: bool) -> float:
    w, h = box[2] - box[0], box[3] - box[1]
    return np.pi * w * h / 4 if ellipse else w * h


def write_video(scene: Scene, path: Path, fps: float = 30.0) -> Path:
    height, width = scene.images[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (width, height))
    for image in scene.images:
        writer.write(cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    writer.release()
    return path


# detections ---------------------------------------------------------------------------------------------------------

def noisy_detections(scene: Scene, miss: float, false: float, seed: int) -> list[Detections]:
    rng = np.random.default_rng(seed + 1)
    height, width = scene.images[0].shape[:2]
    out = []
    for boxes, visible in zip(scene.boxes, scene.visible):
        found = rng.random(len(boxes)) >= miss + 0.5 * (1 - visible)
        size = np.concatenate([boxes[:, 2:] - boxes[:, :2]] * 2, axis=1)
        jittered = boxes + rng.normal(0, 0.03, boxes.shape) * size
        scores = np.clip(0.35 + 0.6 * visible + rng.normal(0, 0.1, len(boxes)), 0.05, 0.99)
        count = rng.poisson(false)
        corner = rng.uniform(0, [width - 40, height - 40], (count, 2))
        fake = np.concatenate([corner, corner + rng.uniform(20, 60, (count, 2))], axis=1)
        all_boxes = np.concatenate([jittered[found], fake]).astype(np.float32)
        all_scores = np.concatenate([scores[found], rng.uniform(0.1, 0.6, count)]).astype(np.float32)
        n = len(all_scores)
        out.append(Detections(all_boxes, all_scores, np.zeros(n, dtype=np.int64), np.array(["shape"] * n)))
    return out


def checkpoint_detections(detector, video: Path, low: float) -> list[Detections]:
    return [found for _, found in detector.predict_many(str(video), batch_size=4, conf=low)]


# tracking and scoring -----------------------------------------------------------------------------------------------

def track_all(detections: list[Detections], high: float, low: float, buffer: int) -> tuple[list[Detections], float]:
    """The tracked detections of every frame and the tracker's mean seconds per frame."""
    tracker = Tracker(high=high, low=low, buffer=buffer)
    tracked, spent = [], 0.0
    for found in detections:
        start = time.perf_counter()
        tracked.append(tracker.update(found))
        spent += time.perf_counter() - start
    return tracked, spent / max(len(detections), 1)


def score(scene: Scene, tracked: list[Detections]) -> dict[str, float]:
    import motmetrics

    accumulator = motmetrics.MOTAccumulator(auto_id=True)
    for ids, boxes, found in zip(scene.ids, scene.boxes, tracked):
        iou = iou_xyxy(torch.from_numpy(boxes), torch.from_numpy(found.boxes)).numpy().astype(np.float64)
        distance = np.where(iou >= 0.5, 1 - iou, np.nan)
        accumulator.update(ids.tolist(), found.track_ids.tolist(), distance)
    metrics = motmetrics.metrics.create()
    summary = metrics.compute(accumulator, metrics=["idf1", "mota", "num_switches", "precision", "recall",
                                                    "num_unique_objects", "num_frames"], name="run")
    return {key: float(summary[key].iloc[0]) for key in summary.columns}


# the demo's frame time ----------------------------------------------------------------------------------------------

def demo_times(detector, video: Path, frames: int, conf: float, track: bool) -> tuple[float, float]:
    """(ms per frame of every stage but ``track``, ms per frame of ``track``) of a headless demo run."""
    from detector.demo.loop import DemoOptions, run_demo
    from detector.inference.sources import open_source

    source = open_source(str(video))
    source.length = None

    class FirstFrames:  # the first `frames` frames of the source
        wait_ms, live, skipped, length = source.wait_ms, False, 0, frames

        def __iter__(self):
            for i, frame in enumerate(source):
                if i >= frames:
                    return
                yield frame

        def close(self):
            source.close()

    report = run_demo(detector, FirstFrames(), None, DemoOptions(conf=conf, track=track))
    stages = dict(report.stages)
    tracked = stages.pop("track", 0.0)
    return 1000 * sum(stages.values()) / report.frames, 1000 * tracked / report.frames


def random_detector(input_size: int):
    from detector.inference.detectors import Detector
    from detector.model import CenterNet

    return Detector(CenterNet(num_classes=3, weights=None), ["a", "b", "c"], input_size, prepare=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=600)
    parser.add_argument("--objects", type=int, default=10)
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--min_visible", type=float, default=0.2, help="ground truth: objects at least this visible")
    parser.add_argument("--miss", type=float, default=0.05, help="noisy ground truth: base miss probability")
    parser.add_argument("--false", type=float, default=0.5, help="noisy ground truth: false boxes per frame")
    parser.add_argument("--conf", type=float, default=0.5, help="the tracker's high threshold (the demo's --conf)")
    parser.add_argument("--buffer", type=int, default=30, help="frames a lost track is kept")
    parser.add_argument("--checkpoint", type=str, default=None, help="also track this detector's boxes")
    parser.add_argument("--input_size", type=int, default=512, help="without --checkpoint: the timed network's size")
    parser.add_argument("--timing_frames", type=int, default=100, help="frames of the timed demo run")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--video", type=str, default=None, help="where to write the synthetic video")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    scene = make_scene(args.frames, args.objects, args.width, args.height, args.min_visible, args.seed)
    folder = tempfile.TemporaryDirectory()
    video = write_video(scene, Path(args.video or Path(folder.name) / "scene.mp4"))
    boxes_per_frame = np.mean([len(ids) for ids in scene.ids])
    print(f"scene: {args.frames} frames {args.width}x{args.height}, {args.objects} objects "
          f"({boxes_per_frame:.1f} in the ground truth a frame), seed {args.seed}, video {video}")

    sets = {"noisy ground truth": noisy_detections(scene, args.miss, args.false, args.seed)}
    detector = None
    if args.checkpoint:
        from detector.inference.detectors import Detector

        detector = Detector.from_checkpoint(args.checkpoint, "cpu")
        sets["checkpoint"] = checkpoint_detections(detector, video, min(LOW_SCORE, args.conf))
    print("| detections | tracker | boxes/frame | IDF1 | MOTA | ID switches | precision | recall | tracker ms/frame |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    track_ms = {}
    for name, detections in sets.items():
        for arm, low in (("ByteTrack", min(LOW_SCORE, args.conf)), ("high only", args.conf)):
            tracked, seconds = track_all(detections, args.conf, low, args.buffer)
            result = score(scene, tracked)
            track_ms[name, arm] = 1000 * seconds
            boxes = np.mean([len(found) for found in detections])
            print(f"| {name} | {arm} | {boxes:.1f} | {result['idf1']:.3f} | {result['mota']:.3f} | "
                  f"{int(result['num_switches'])} | {result['precision']:.3f} | {result['recall']:.3f} | "
                  f"{1000 * seconds:.3f} |")

    frames = min(args.timing_frames, args.frames)
    if detector is not None:
        frame_ms, tracker_ms = demo_times(detector, video, frames, args.conf, track=True)
        where = "the demo's track stage, checkpoint boxes"
    else:
        frame_ms, _ = demo_times(random_detector(args.input_size), video, frames, args.conf, track=False)
        tracker_ms = track_ms["noisy ground truth", "ByteTrack"]
        where = f"noisy ground truth; frame time of a random-init network at {args.input_size}"
    print(f"demo frame time {frame_ms:.1f} ms/frame over {frames} frames ({args.threads} threads), tracker "
          f"{tracker_ms:.3f} ms/frame ({where}): the tracker adds {100 * tracker_ms / frame_ms:.2f}%")
    folder.cleanup()


if __name__ == "__main__":
    main()
