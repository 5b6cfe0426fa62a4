"""What a detector returns for an image, shared by the predictor, the drawing, the demo and export users.

Plain numpy, no model: :class:`Detections` (boxes, scores, labels, names of one image) and :class:`FrameResult`
(one demo frame: the detections, an optional heatmap, the time spent per stage), :class:`Prediction` (one image
of a stream, named).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import NamedTuple, Sequence

import numpy as np
import torch

# The default score threshold of the predictor, the demo and the prediction grid (a detection is kept when its
# score is >= it). Evaluation keeps every score: the COCO metric integrates over all thresholds.
DEFAULT_SCORE_THRESHOLD = 0.3


@dataclass
class Detections:
    """The detections of one image, by descending score.

    ``boxes [N, 4]`` float32 xyxy in original pixels, ``scores [N]`` float32 probabilities, ``labels [N]`` int64
    class indices, ``names [N]`` str class names; ``track_ids [N]`` int64 object ids (from 1) when the detections
    come from a tracker (``Detector.track``, ``detector.inference.track``), else None.
    """

    boxes: np.ndarray
    scores: np.ndarray
    labels: np.ndarray
    names: np.ndarray
    track_ids: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.scores)

    def select(self, keep: np.ndarray) -> Detections:
        """The detections where the ``[N]`` bool mask ``keep`` is True."""
        ids = None if self.track_ids is None else self.track_ids[keep]
        return Detections(self.boxes[keep], self.scores[keep], self.labels[keep], self.names[keep], ids)

    def with_track_ids(self, track_ids) -> Detections:
        """The same detections with ``track_ids [N]`` (one object id per detection)."""
        track_ids = np.asarray(track_ids, dtype=np.int64).reshape(-1)
        if len(track_ids) != len(self):
            raise ValueError(f"{len(track_ids)} track ids for {len(self)} detections")
        return Detections(self.boxes, self.scores, self.labels, self.names, track_ids)

    def to_dict(self) -> dict[str, list]:
        """Plain Python values (for json): ``boxes`` ``[[x1, y1, x2, y2], ...]`` original pixels, ``scores``,
        ``labels`` (class indices) and ``names`` (class names), each a list of N, by descending score; and
        ``track_ids`` when tracked."""
        data = {"boxes": self.boxes.astype(float).tolist(), "scores": self.scores.astype(float).tolist(),
                "labels": [int(label) for label in self.labels], "names": [str(name) for name in self.names]}
        if self.track_ids is not None:
            data["track_ids"] = [int(i) for i in self.track_ids]
        return data

    def to_json(self, **kwargs) -> str:
        """:meth:`to_dict` as a json string (``kwargs`` go to ``json.dumps``, e.g. ``indent=2``)."""
        return json.dumps(self.to_dict(), **kwargs)

    @classmethod
    def from_dict(cls, data: dict) -> Detections:
        """The inverse of :meth:`to_dict` (and of ``json.loads(to_json())``)."""
        ids = data.get("track_ids")
        return cls(np.asarray(data["boxes"], dtype=np.float32).reshape(-1, 4),
                   np.asarray(data["scores"], dtype=np.float32), np.asarray(data["labels"], dtype=np.int64),
                   np.array(data["names"], dtype=str).reshape(-1),
                   None if ids is None else np.asarray(ids, dtype=np.int64).reshape(-1))

    @classmethod
    def from_arrays(cls, boxes, scores, labels, class_names: Sequence[str]) -> Detections:
        """From ``boxes [N, 4]``, ``scores [N]``, ``labels [N]`` (numpy arrays or tensors, any device)."""
        labels = np.asarray(_numpy(labels), dtype=np.int64)
        names = np.array([class_names[i] for i in labels.tolist()], dtype=str).reshape(-1)
        return cls(np.asarray(_numpy(boxes), dtype=np.float32).reshape(-1, 4),
                   np.asarray(_numpy(scores), dtype=np.float32), labels, names)


class Prediction(NamedTuple):
    """One image of ``predict_many``: ``name`` is its file path (str) or its index (int: a video frame, an array of
    an iterable), ``detections`` its :class:`Detections`."""

    name: str | int
    detections: Detections


@dataclass
class FrameResult:
    """What a detector's ``predict_frame`` returns for one image.

    ``heatmap``: ``[C, h, w]`` float32 class probabilities on the letterboxed input's output grid (stride cells),
    or None when not asked for. ``times``: seconds spent in ``preprocess``, ``model`` and ``decode``.
    """

    detections: Detections
    heatmap: np.ndarray | None = None
    times: dict[str, float] = field(default_factory=dict)


def _numpy(x) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
