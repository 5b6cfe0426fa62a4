"""Object tracks: a ByteTrack-style tracker that gives each object a stable id across the frames of a video.

:class:`Tracker` takes one frame's :class:`Detections` at a time (``update``) and returns the ones that belong to a
confirmed track, with their ``track_ids``. The steps of ByteTrack (Zhang et al., 2022), written here on numpy alone:

1. every track (active or lost) moves by a constant-velocity Kalman filter on its box (centre, aspect ratio, height);
2. first association: the high-score boxes (``score >= high``) to all active and lost tracks, by the optimal
   assignment (:func:`assign`) on ``1 - IoU x score``; a pair is allowed up to a cost of 0.8;
3. second association: the low-score boxes (``low <= score < high``) to the active tracks still unmatched, on
   ``1 - IoU`` up to 0.5; an active track matched by neither becomes lost;
4. a track started in the previous frame is confirmed (gets its id) when a remaining high-score box matches it
   (cost up to 0.7), else dropped; remaining high-score boxes with ``score >= new`` start tracks (those of the first
   frame are confirmed at once);
5. a track lost for more than ``buffer`` frames is removed; of an active and a lost track on one place (IoU above
   0.85) the younger is dropped.

Ids count from 1 in the order tracks are confirmed and are never reused. Tracking is class-agnostic, as ByteTrack
is: a box's class may change from frame to frame (CenterNet's peaks of two similar classes swap) without breaking
its track; a box keeps its own label.
"""
from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, field

import numpy as np

from detector.detections import Detections

# ByteTrack's defaults (its paper and reference code): the second stage's lower score bound, the margin a box needs
# above the high threshold to start a track, the frames a lost track is kept, and the association gates (costs).
LOW_SCORE = 0.1
NEW_TRACK_MARGIN = 0.1
BUFFER_FRAMES = 30
FIRST_GATE, SECOND_GATE, CONFIRM_GATE, DUPLICATE_IOU = 0.8, 0.5, 0.7, 0.85
# The Kalman filter's noise, relative to the box height (the values of DeepSORT and ByteTrack).
POSITION_NOISE, VELOCITY_NOISE = 1 / 20, 1 / 160


# optimal assignment -------------------------------------------------------------------------------------------------

def assign(cost: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The minimum-cost assignment of the rows of ``cost [N, M]`` to its columns (each used once; ``min(N, M)``
    pairs): ``(rows, cols)`` sorted by row. The Hungarian method with potentials and shortest augmenting paths."""
    cost = np.asarray(cost, dtype=np.float64)
    if cost.size == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    if cost.shape[0] > cost.shape[1]:
        cols, rows = assign(cost.T)
        order = np.argsort(rows)
        return rows[order], cols[order]
    n, m = cost.shape
    a = np.zeros((n + 1, m + 1))
    a[1:, 1:] = cost
    u, v = np.zeros(n + 1), np.zeros(m + 1)
    owner = np.zeros(m + 1, dtype=np.int64)  # owner[j]: the row holding column j (0: none; rows count from 1)
    way = np.zeros(m + 1, dtype=np.int64)
    for row in range(1, n + 1):
        owner[0], column = row, 0
        reach = np.full(m + 1, np.inf)
        used = np.zeros(m + 1, dtype=bool)
        while owner[column] != 0:
            used[column] = True
            current = owner[column]
            reduced = a[current] - u[current] - v
            better = ~used & (reduced < reach)
            reach[better], way[better] = reduced[better], column
            free = np.where(used, np.inf, reach)
            nearest = int(np.argmin(free))
            delta = free[nearest]
            u[owner[used]] += delta
            v[used] -= delta
            reach[~used] -= delta
            column = nearest
        while column != 0:
            previous = way[column]
            owner[column] = owner[previous]
            column = previous
    cols = np.flatnonzero(owner[1:]) + 1
    rows = owner[cols] - 1
    order = np.argsort(rows)
    return rows[order], cols[order] - 1


def gated_assign(cost: np.ndarray, gate: float) -> list[tuple[int, int]]:
    """The pairs of the optimal assignment whose cost is at most ``gate``; costs above it count as ``gate`` + a
    little, so the assignment never trades an allowed pair for forbidden ones.

    With the forbidden costs all equal, the best assignment is the best matching of the allowed pairs, which splits
    into the groups of rows and columns that allowed pairs connect: each group is solved alone (a frame's objects
    are far apart, so the groups are small and a crowd of unmatchable boxes costs nothing)."""
    allowed = cost <= gate
    alone = allowed & (allowed.sum(axis=1) == 1)[:, None] & (allowed.sum(axis=0) == 1)[None, :]
    pairs = [(int(r), int(c)) for r, c in zip(*np.nonzero(alone))]  # a row and a column allowed only each other
    for rows, cols in connected_groups(allowed & ~alone):
        part = cost[np.ix_(rows, cols)]
        if part.size == 1 or part.shape[0] == 1 or part.shape[1] == 1:  # one pair: the cheapest
            best = np.unravel_index(int(np.argmin(part)), part.shape)
            pairs.append((int(rows[best[0]]), int(cols[best[1]])))
            continue
        found_rows, found_cols = assign(np.minimum(part, gate + 1e-4))
        pairs += [(int(rows[r]), int(cols[c])) for r, c in zip(found_rows, found_cols)
                  if allowed[rows[r], cols[c]]]
    return sorted(pairs)


def connected_groups(allowed: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """The connected parts of the bipartite graph of ``allowed [N, M]`` (row i - column j when True), as (rows,
    columns) index arrays; rows and columns without an allowed pair are left out."""
    groups = []
    row_seen = ~allowed.any(axis=1)
    for start in range(allowed.shape[0]):
        if row_seen[start]:
            continue
        rows = np.zeros(allowed.shape[0], dtype=bool)
        rows[start] = row_seen[start] = True
        cols = np.zeros(allowed.shape[1], dtype=bool)
        while True:
            new_cols = allowed[rows].any(axis=0) & ~cols
            if not new_cols.any():
                break
            cols |= new_cols
            new_rows = allowed[:, new_cols].any(axis=1) & ~rows
            rows |= new_rows
        row_seen |= rows
        groups.append((np.flatnonzero(rows), np.flatnonzero(cols)))
    return groups


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of the xyxy boxes ``a [N, 4]`` and ``b [M, 4]``: ``[N, M]`` (numpy: the frames' few boxes)."""
    a, b = np.asarray(a, dtype=np.float64).reshape(-1, 4), np.asarray(b, dtype=np.float64).reshape(-1, 4)
    width = np.clip(np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0]), 0, None)
    height = np.clip(np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1]), 0, None)
    inter = width * height
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


# the Kalman filter --------------------------------------------------------------------------------------------------

def to_xyah(boxes: np.ndarray) -> np.ndarray:
    """xyxy ``[N, 4]`` -> (centre x, centre y, width / height, height), the filter's measurement."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    w, h = boxes[:, 2] - boxes[:, 0], np.maximum(boxes[:, 3] - boxes[:, 1], 1e-6)
    return np.stack([(boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2, w / h, h], axis=1)


def to_xyxy(xyah: np.ndarray) -> np.ndarray:
    """The inverse of :func:`to_xyah` on ``[N, >=4]`` states."""
    cx, cy, a, h = (xyah[:, i] for i in range(4))
    w = a * h
    return np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1)


def _noise(height: np.ndarray, position: float, velocity: float, aspect: float, aspect_velocity: float) -> np.ndarray:
    """``[N, 8, 8]`` diagonal covariances scaled by each box's height (aspect terms absolute)."""
    h = height[:, None]
    std = np.concatenate([position * h, position * h, np.full_like(h, aspect), position * h,
                          velocity * h, velocity * h, np.full_like(h, aspect_velocity), velocity * h], axis=1)
    return np.einsum("ni,ij->nij", std ** 2, np.eye(8))


TRANSITION = np.eye(8) + np.eye(8, k=4)  # position += velocity, once per frame
MEASURE = np.eye(4, 8)


def kalman_start(xyah: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean ``[N, 8]`` (velocity 0) and covariance ``[N, 8, 8]`` of new tracks at the measured boxes."""
    mean = np.concatenate([xyah, np.zeros_like(xyah)], axis=1)
    return mean, _noise(xyah[:, 3], 2 * POSITION_NOISE, 10 * VELOCITY_NOISE, 1e-2, 1e-5)


def kalman_predict(mean: np.ndarray, cov: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One frame ahead at constant velocity, for ``[N, 8]`` means and ``[N, 8, 8]`` covariances."""
    noise = _noise(mean[:, 3], POSITION_NOISE, VELOCITY_NOISE, 1e-2, 1e-5)
    return mean @ TRANSITION.T, TRANSITION @ cov @ TRANSITION.T + noise


def kalman_update(mean: np.ndarray, cov: np.ndarray, xyah: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The states corrected by the measured boxes ``xyah [N, 4]``."""
    h = mean[:, 3:4]
    std = np.concatenate([POSITION_NOISE * h, POSITION_NOISE * h, np.full_like(h, 1e-1), POSITION_NOISE * h], axis=1)
    innovation_cov = MEASURE @ cov @ MEASURE.T + np.einsum("ni,ij->nij", std ** 2, np.eye(4))
    gain = np.linalg.solve(innovation_cov, MEASURE @ cov).transpose(0, 2, 1)  # P H^T S^-1 (S, P symmetric)
    mean = mean + np.einsum("nij,nj->ni", gain, xyah - mean[:, :4])
    return mean, cov - gain @ innovation_cov @ gain.transpose(0, 2, 1)


# the tracker --------------------------------------------------------------------------------------------------------

@dataclass
class Track:
    """One object's track: its filter state, ``id`` (0 until confirmed), whether it is ``lost`` (unmatched since
    ``last_frame``), and the frame it started."""

    mean: np.ndarray
    cov: np.ndarray
    start_frame: int
    last_frame: int
    id: int = 0
    lost: bool = False
    detection: int = -1  # the index of its box in the current frame's detections, -1 when unmatched


def track_boxes(tracks: list[Track]) -> np.ndarray:
    """The xyxy boxes ``[T, 4]`` where the tracks' filters put them."""
    return to_xyxy(np.stack([t.mean for t in tracks])) if tracks else np.zeros((0, 4))


@dataclass
class Tracker:
    """ByteTrack-style multi-object tracking (the module's docstring gives the steps); one instance per video.

    ``high``: boxes at or above it are matched first and may start tracks (the display threshold, the demo's
    ``--conf``); ``low``: boxes from it up to ``high`` only continue active tracks (ByteTrack's second stage; None:
    0.1, or ``high`` when that is lower);
    ``new``: a track starts from a box at or above it (None: ``high + 0.1``, at most 1, as ByteTrack);
    ``buffer``: frames a lost track waits to be found again before it is removed.
    """

    high: float = 0.5
    low: float | None = None
    new: float | None = None
    buffer: int = BUFFER_FRAMES
    frame: int = field(default=0, init=False)
    tracks: list[Track] = field(default_factory=list, init=False)
    next_id: int = field(default=1, init=False)

    def __post_init__(self):
        check_tracker_options(self.high, self.low, self.buffer, self.new)
        if self.low is None:
            self.low = min(LOW_SCORE, self.high)
        if self.new is None:
            self.new = min(self.high + NEW_TRACK_MARGIN, 1.0)

    def update(self, detections: Detections) -> Detections:
        """One frame's detections (any order) -> those that belong to a confirmed track this frame, with their
        ``track_ids``, in the input's order; boxes below ``low`` are ignored."""
        self.frame += 1
        boxes, scores = detections.boxes, detections.scores
        high = np.flatnonzero(scores >= self.high)
        low = np.flatnonzero((scores >= self.low) & (scores < self.high))
        for track in self.tracks:
            track.detection = -1
        confirmed = [t for t in self.tracks if t.id]
        pending = [t for t in self.tracks if not t.id]
        self._predict(confirmed)
        high_left = self._associate(confirmed, high, boxes, scores, FIRST_GATE)
        active_left = [t for t in confirmed if t.detection < 0 and not t.lost]
        self._associate(active_left, low, boxes, None, SECOND_GATE)
        for track in confirmed:
            track.lost = track.detection < 0
        high_left = self._associate(pending, high_left, boxes, scores, CONFIRM_GATE)
        for track in pending:
            if track.detection >= 0:
                track.id, self.next_id = self.next_id, self.next_id + 1
        born = self._start([i for i in high_left if scores[i] >= self.new], boxes)
        self.tracks = [t for t in confirmed if not (t.lost and self.frame - t.last_frame > self.buffer)]
        self.tracks += [t for t in pending if t.id] + born
        self._drop_duplicates()
        shown = [t for t in self.tracks if t.id and t.detection >= 0]
        ids = np.zeros(len(detections), dtype=np.int64)
        for track in shown:
            ids[track.detection] = track.id
        keep = ids > 0
        return detections.select(keep).with_track_ids(ids[keep])

    def _predict(self, tracks: list[Track]) -> None:
        if not tracks:
            return
        mean = np.stack([t.mean for t in tracks])
        mean[[i for i, t in enumerate(tracks) if t.lost], 7] = 0  # a lost track's height stops changing
        mean, cov = kalman_predict(mean, np.stack([t.cov for t in tracks]))
        for track, m, c in zip(tracks, mean, cov):
            track.mean, track.cov = m, c

    def _associate(self, tracks: list[Track], candidates: np.ndarray, boxes: np.ndarray, scores: np.ndarray | None,
                   gate: float) -> np.ndarray:
        """Match ``tracks`` to the boxes ``candidates`` (indices) on ``1 - IoU`` (``x score`` when given) up to
        ``gate``, update the matched ones; returns the candidates left."""
        if not tracks or len(candidates) == 0:
            return candidates
        similarity = iou_matrix(track_boxes(tracks), boxes[candidates])
        if scores is not None:
            similarity = similarity * scores[candidates][None, :]
        pairs = gated_assign(1 - similarity, gate)
        if pairs:
            matched = [tracks[r] for r, _ in pairs]
            found = candidates[[c for _, c in pairs]]
            mean, cov = kalman_update(np.stack([t.mean for t in matched]), np.stack([t.cov for t in matched]),
                                      to_xyah(boxes[found]))
            for track, m, c, index in zip(matched, mean, cov, found):
                track.mean, track.cov, track.detection = m, c, int(index)
                track.last_frame, track.lost = self.frame, False
        taken = {c for _, c in pairs}
        return np.array([index for j, index in enumerate(candidates) if j not in taken], dtype=np.int64)

    def _start(self, indices: list[int], boxes: np.ndarray) -> list[Track]:
        if not indices:
            return []
        mean, cov = kalman_start(to_xyah(boxes[indices]))
        born = [Track(m, c, self.frame, self.frame, detection=index) for m, c, index in zip(mean, cov, indices)]
        if self.frame == 1:  # the first frame's tracks are confirmed at once
            for track in born:
                track.id, self.next_id = self.next_id, self.next_id + 1
        return born

    def _drop_duplicates(self) -> None:
        """Of an active and a lost track on one place, keep the one tracked longer (the lost one on a tie)."""
        active = [t for t in self.tracks if not t.lost]
        lost = [t for t in self.tracks if t.lost]
        if not active or not lost:
            return
        overlap = iou_matrix(track_boxes(active), track_boxes(lost)) > DUPLICATE_IOU
        dropped = set()
        for i, j in zip(*np.nonzero(overlap)):
            a, b = active[i], lost[j]
            dropped.add(id(b) if a.last_frame - a.start_frame > b.last_frame - b.start_frame else id(a))
        self.tracks = [t for t in self.tracks if id(t) not in dropped]


def check_tracker_options(high: float, low: float | None, buffer: int, new: float | None = None,
                          names: tuple[str, str, str, str] = ("high", "low", "buffer", "new"),
                          error: type[ValueError] = ValueError) -> None:
    """``error`` (a ValueError) naming the option (``names``: the caller's spelling, e.g. the demo's flags) when a
    threshold is not a probability, ``low`` is above ``high``, or ``buffer`` is not a whole number of frames >= 1
    (None: the default, always valid)."""
    for value, name in ((high, names[0]), (low, names[1]), (new, names[3])):
        if value is not None and not (isinstance(value, numbers.Real) and math.isfinite(value) and 0 <= value <= 1):
            raise error(f"{name} {value}: a score threshold is between 0 and 1")
    if low is not None and low > high:
        raise error(f"{names[1]} {low} is above {names[0]} {high}: low-score boxes are those between the two; "
                         f"give {names[1]} <= {high}")
    if isinstance(buffer, bool) or not isinstance(buffer, numbers.Integral) or buffer < 1:
        raise error(f"{names[2]} {buffer}: the frames a lost track is kept is a whole number >= 1 "
                         f"(default {BUFFER_FRAMES})")
