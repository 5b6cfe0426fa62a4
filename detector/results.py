"""Prediction files from :class:`Detections`: one COCO-style results json, YOLO-format label txt files and a
MOTChallenge tracks file (what ``centernet demo --save_json``, ``--save_txt`` and ``--save_mot`` write; usable with
``Detector.predict_many`` and ``Detector.track`` too).

Where the boxes change frame (xyxy original pixels in, each conversion named in ``detector/boxes.py``):

- json: ``bbox`` COCO ``[x, y, w, h]`` in original pixels (``xyxy_to_xywh``), rounded to 0.01 px as the evaluation's
  results writer does; ``category_id`` the dataset's id of the label (``category_ids[label]``: COCO's ids have
  gaps, VOC and YOLO sets count from 1); ``image_id``; ``score``; ``file_name`` and, for a video, ``frame``; and
  ``track_id`` for tracked detections.
- txt: one ``class cx cy w h [score]`` line per detection, the centre and size divided by the image's width and
  height (``xyxy_to_cxcywh``, then 0..1); ``class`` the contiguous label ``0..C-1``, as YOLO datasets number
  classes. Without the score a file is a YOLO label file that ``data/yolo.py`` reads back.
- MOT: one ``frame,id,x,y,w,h,score,-1,-1,-1`` line per tracked detection (MOTChallenge's results format), ``frame``
  counted from 1 (the source's first frame or image is 1), ``id`` the track id, ``x, y`` the box's top-left corner
  and ``w, h`` its size in original pixels (``xyxy_to_xywh``; pixel ``i`` spans ``[i, i + 1)``, as everywhere in
  the package), the last three fields (3D position) unused.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from detector.boxes import xyxy_to_cxcywh, xyxy_to_xywh
from detector.detections import Detections
from detector.overwrite import temporary_beside, write_text


def coco_results(detections: Detections, image_id: int, category_ids: Sequence[int], file_name: str,
                 frame: int | None = None) -> list[dict]:
    """One image's detections as COCO result dicts (``bbox`` xywh original pixels), with its ``file_name`` and,
    for a video frame, ``frame``."""
    xywh = xyxy_to_xywh(torch.from_numpy(detections.boxes)).tolist()
    where = {"file_name": file_name} if frame is None else {"file_name": file_name, "frame": int(frame)}
    results = [{"image_id": int(image_id), "category_id": int(category_ids[label]),
                "bbox": [round(v, 2) for v in box], "score": round(float(score), 5), **where}
               for box, score, label in zip(xywh, detections.scores, detections.labels)]
    if detections.track_ids is not None:
        for result, track_id in zip(results, detections.track_ids):
            result["track_id"] = int(track_id)
    return results


def yolo_lines(detections: Detections, width: int, height: int, scores: bool = True) -> list[str]:
    """One ``"class cx cy w h [score]"`` line per detection, normalised by the image's ``width`` and ``height``."""
    cxcywh = xyxy_to_cxcywh(torch.from_numpy(detections.boxes)).numpy()
    normalised = cxcywh / np.array([width, height, width, height], dtype=np.float32)
    lines = []
    for (cx, cy, w, h), score, label in zip(normalised, detections.scores, detections.labels):
        line = f"{int(label)} {cx:.6f} {cy:.6f} {w:.6f} {h:.6f}"
        lines.append(f"{line} {float(score):.5f}" if scores else line)
    return lines


def mot_lines(detections: Detections, frame: int) -> list[str]:
    """One ``"frame,id,x,y,w,h,score,-1,-1,-1"`` line per tracked detection; ``frame`` counts from 1."""
    if detections.track_ids is None:
        raise ValueError("MOT lines need tracked detections (Detector.track, or the demo's --track)")
    xywh = xyxy_to_xywh(torch.from_numpy(detections.boxes)).tolist()
    return [f"{int(frame)},{int(track_id)},{x:.2f},{y:.2f},{w:.2f},{h:.2f},{float(score):.5f},-1,-1,-1"
            for (x, y, w, h), score, track_id in zip(xywh, detections.scores, detections.track_ids)]


class MotWriter:
    """Writes one MOTChallenge tracks file as the frames come (:func:`mot_lines`), to a temporary file beside
    ``path`` renamed over it by ``close`` (also after Ctrl-C): ``path`` is never truncated before."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.temporary = temporary_beside(self.path)
        self.file = open(self.temporary, "w", encoding="utf-8")

    def write(self, detections: Detections, frame: int) -> None:
        self.file.writelines(line + "\n" for line in mot_lines(detections, frame))

    def close(self) -> None:
        if not self.file.closed:
            self.file.close()
            os.replace(self.temporary, self.path)


class CocoResultsWriter:
    """Writes one COCO results json (a list of result dicts) as the images come: one detection per line, so memory
    stays flat over a long video, and ``close`` (also after Ctrl-C) leaves a valid file. The lines go to a temporary
    file beside ``path``, renamed over it by ``close``: ``path`` is never truncated before."""

    def __init__(self, path: str | Path, category_ids: Sequence[int]):
        self.path = Path(path)
        self.category_ids = list(category_ids)
        self.temporary = temporary_beside(self.path)
        self.file = open(self.temporary, "w", encoding="utf-8")
        self.file.write("[")
        self.count = 0

    def write(self, detections: Detections, image_id: int, file_name: str, frame: int | None = None) -> None:
        for result in coco_results(detections, image_id, self.category_ids, file_name, frame):
            self.file.write(("," if self.count else "") + "\n" + json.dumps(result))
            self.count += 1

    def close(self) -> None:
        if not self.file.closed:
            self.file.write("\n]\n")
            self.file.close()
            os.replace(self.temporary, self.path)


class YoloTxtWriter:
    """Writes one YOLO label file per image into ``folder``: ``<name>.txt`` (an image with no detection gets an
    empty file, so that a missing file means "not processed"), each through a temporary file renamed over it."""

    def __init__(self, folder: str | Path, scores: bool = True):
        self.folder = Path(folder)
        self.scores = scores
        self.folder.mkdir(parents=True, exist_ok=True)

    def write(self, detections: Detections, name: str, width: int, height: int) -> Path:
        path = self.folder / f"{name}.txt"
        lines = yolo_lines(detections, width, height, self.scores)
        return write_text(path, "".join(line + "\n" for line in lines))

    def close(self) -> None:
        pass
