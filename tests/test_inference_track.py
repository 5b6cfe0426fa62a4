"""The tracker (``detector/inference/track.py``) on hand-made box sequences: crossing objects keep their ids, a
hidden object comes back with its id, a low-score box continues a track (ByteTrack's second stage) but starts none,
a track lost beyond the buffer ends, new objects get new ids and ids are never reused; the optimal assignment
against brute force; the whole tracker against supervision's ByteTrack on the same detections (ids relabelled)."""
import itertools

import numpy as np
import pytest

from detector.detections import Detections
from detector.inference.track import (Tracker, assign, check_tracker_options, connected_groups, gated_assign,
                                      iou_matrix, track_boxes)

SIZE = 40.0


def frame(*objects):
    """Detections of one frame from ``(x, y, score)`` tuples: 40 x 40 boxes with their top-left corner at (x, y);
    the label of each box is its index, so that a test can tell which box got which id."""
    boxes = np.array([[x, y, x + SIZE, y + SIZE] for x, y, _ in objects], dtype=np.float32).reshape(-1, 4)
    scores = np.array([s for _, _, s in objects], dtype=np.float32)
    n = len(objects)
    return Detections(boxes, scores, np.arange(n, dtype=np.int64), np.array([f"box{i}" for i in range(n)]))


def run(frames, **options):
    """The ids the tracker gives: one ``{box index: id}`` per frame."""
    tracker = Tracker(**{"high": 0.5, **options})
    out = []
    for detections in frames:
        tracked = tracker.update(detections)
        out.append(dict(zip(tracked.labels.tolist(), tracked.track_ids.tolist())))
    return out


def test_two_boxes_crossing_keep_their_ids():
    # A moves right and B left on one line, 12 px a frame: they overlap for several frames and swap sides. In the
    # frames around the crossing each one's last box is closer to the other's new box; only the motion model
    # (constant velocity) tells them apart. B is listed first in the crossing frames, so matching by order fails too.
    frames = []
    for t in range(20):
        a, b = (0 + 12 * t, 100, 0.9), (228 - 12 * t, 104, 0.8)
        frames.append(frame(b, a) if 8 <= t <= 11 else frame(a, b))
    ids = run(frames)
    a_id, b_id = ids[0][0], ids[0][1]
    assert a_id != b_id
    for t, found in enumerate(ids):
        a_index, b_index = (1, 0) if 8 <= t <= 11 else (0, 1)
        assert found == {a_index: a_id, b_index: b_id}, f"frame {t}: {found}"


def walking(t, hidden=()):
    """One object moving right 5 px a frame (hidden in the frames ``hidden``) and one standing still."""
    mover = [] if t in hidden else [(10 + 5 * t, 50, 0.9)]
    return frame((300, 200, 0.9), *mover)


def test_a_hidden_object_comes_back_with_its_id():
    ids = run([walking(t, hidden=range(6, 12)) for t in range(20)])
    standing, mover = ids[0][0], ids[0][1]
    assert all(found == {0: standing} for found in ids[6:12])  # hidden: no box, no id
    assert all(found == {0: standing, 1: mover} for found in ids[12:]), ids[12:]


def test_a_track_lost_beyond_the_buffer_ends_and_its_object_gets_a_new_id():
    ids = run([walking(t, hidden=range(6, 12)) for t in range(20)], buffer=5)  # hidden 6 frames > 5
    standing, mover = ids[0][0], ids[0][1]
    assert ids[12] == {0: standing}  # the new track is not confirmed in its first frame
    assert ids[13][0] == standing and ids[13][1] not in (standing, mover)
    assert all(found == ids[13] for found in ids[13:])


def test_the_buffer_counts_frames_since_the_last_match():
    # hidden for exactly `buffer` frames: still found again
    ids = run([walking(t, hidden=range(6, 11)) for t in range(16)], buffer=5)
    assert ids[11] == ids[0]


def test_a_low_score_box_continues_a_track_but_starts_none():
    frames = [frame((10 + 5 * t, 50, 0.9 if t < 5 else 0.2), (300, 200, 0.3)) for t in range(10)]
    ids = run(frames)  # high 0.5, low 0.1: 0.2 and 0.3 are low-score boxes
    assert all(found == {0: ids[0][0]} for found in ids), ids  # the box at 0.3 never gets a track


def test_without_the_second_stage_a_low_score_box_is_dropped():
    # the same sequence with low = high: the 0.2 boxes are ignored, so the track is lost (the test above is not
    # satisfied by a tracker that shows every box)
    frames = [frame((10 + 5 * t, 50, 0.9 if t < 5 else 0.2)) for t in range(10)]
    ids = run(frames, low=0.5)
    assert ids[5:] == [{}] * 5


def test_new_objects_get_new_ids_from_their_second_frame_and_ids_are_never_reused():
    frames = [frame((10, 10, 0.9))] * 3
    frames += [frame((10, 10, 0.9), (200, 10, 0.9))] * 3  # a second object arrives in frame 3
    frames += [frame((200, 10, 0.9))] * 4  # the first leaves
    frames += [frame((200, 10, 0.9), (10, 10, 0.9))] * 4  # an object where the first was, after it ended
    ids = run(frames, buffer=2)
    assert ids[:3] == [{0: 1}] * 3
    assert ids[3] == {0: 1}  # the newcomer is unconfirmed in its first frame
    assert ids[4:6] == [{0: 1, 1: 2}] * 2
    assert ids[6:10] == [{0: 2}] * 4
    assert ids[10] == {0: 2} and ids[11:] == [{0: 2, 1: 3}] * 3


def test_a_box_seen_once_never_gets_an_id():
    frames = [frame((10, 10, 0.9))] + [frame((10, 10, 0.9), (200 + 60 * t, 300, 0.9)) for t in range(1, 6)]
    ids = run(frames)  # the second box jumps 60 px (no overlap) every frame: a new track each time, none confirmed
    assert ids == [{0: 1}] * 6


def test_tracking_is_class_agnostic():
    # one object whose class flips every frame keeps its id; two classes found on one place are two objects
    flipping = []
    for t in range(6):
        detections = frame((10 + 5 * t, 10, 0.9), (10 + 5 * t, 10, 0.8), (200, 200, 0.9))
        labels = np.array([t % 2, 9, 5])  # 9: a second class on the first object
        flipping.append(Detections(detections.boxes, detections.scores, labels, detections.names))
    tracker = Tracker(high=0.5)
    found = [tracker.update(detections) for detections in flipping]
    ids = [dict(zip(f.labels.tolist(), f.track_ids.tolist())) for f in found]
    assert ids[0] == {0: 1, 9: 2, 5: 3}
    assert all(d == {t % 2: 1, 9: 2, 5: 3} for t, d in enumerate(ids))


def test_the_tracked_detections_keep_their_boxes_scores_and_labels():
    detections = frame((10, 10, 0.9), (100, 10, 0.05), (200, 10, 0.7))
    tracked = Tracker(high=0.5).update(detections)
    assert tracked.labels.tolist() == [0, 2]  # the box below `low` is dropped
    np.testing.assert_array_equal(tracked.boxes, detections.boxes[[0, 2]])
    np.testing.assert_array_equal(tracked.scores, detections.scores[[0, 2]])
    assert tracked.track_ids.tolist() == [1, 2]
    assert Detections.from_dict(tracked.to_dict()).track_ids.tolist() == [1, 2]
    assert tracked.select(np.array([False, True])).track_ids.tolist() == [2]


# the assignment -----------------------------------------------------------------------------------------------------

def brute_force(cost):
    n, m = cost.shape
    if n <= m:
        return min(sum(cost[i, j] for i, j in enumerate(cols)) for cols in itertools.permutations(range(m), n))
    return brute_force(cost.T)


@pytest.mark.parametrize("shape", [(1, 1), (3, 3), (2, 5), (5, 2), (4, 4), (5, 6)])
def test_assign_finds_the_minimum_cost(shape):
    rng = np.random.default_rng(sum(shape))
    for _ in range(20):
        cost = rng.random(shape).round(1)  # ties included
        rows, cols = assign(cost)
        assert len(rows) == min(shape) and len(set(rows)) == len(set(cols)) == min(shape)
        assert cost[rows, cols].sum() == pytest.approx(brute_force(cost))


def test_gated_assign_prefers_two_allowed_pairs_and_drops_forbidden_ones():
    # the greedy choice (0-0, cost 0.1) would leave row 1 with only a forbidden pair (counted as 0.5 + a little):
    # 0.2 + 0.25 is less than 0.1 + 0.5, so the optimum takes two pairs; row 2 has no allowed pair
    cost = np.array([[0.1, 0.2], [0.25, 0.9], [0.9, 0.95]])
    assert gated_assign(cost, 0.5) == [(0, 1), (1, 0)]
    assert gated_assign(np.array([[0.9, 0.6]]), 0.5) == []
    # a forbidden pair counts as the gate, not its own cost: 0.1 + (0.5 and a little) beats the allowed 0.45 + 0.45
    assert gated_assign(np.array([[0.1, 0.45], [0.45, 1.0]]), 0.5) == [(0, 0)]


@pytest.mark.parametrize("options, message", [
    ({"high": 1.5}, "high 1.5: a score threshold is between 0 and 1"),
    ({"high": 0.3, "low": 0.4}, "low 0.4 is above high 0.3"),
    ({"buffer": 0}, "buffer 0: the frames a lost track is kept is a whole number >= 1"),
    ({"buffer": 2.5}, "buffer 2.5"),
    ({"new": float("nan")}, "new nan"),
])
def test_bad_options_are_refused_with_their_name(options, message):
    Tracker(high=1.0, low=0.0, new=1.0, buffer=1)  # the bounds themselves are fine
    with pytest.raises(ValueError, match=message):
        Tracker(**options)
    with pytest.raises(ValueError, match="--track_buffer 0"):
        check_tracker_options(0.3, None, 0, names=("--conf", "--track_low", "--track_buffer", "new"))


# against a reference implementation ---------------------------------------------------------------------------------

def noisy_scene(seed, frames=40, objects=6):
    """Objects moving at constant speed with jittered boxes, random scores (many low), misses and false boxes."""
    rng = np.random.default_rng(seed)
    position, velocity = rng.uniform(20, 300, (objects, 2)), rng.uniform(-4, 4, (objects, 2))
    size = rng.uniform(20, 60, (objects, 2))
    for _ in range(frames):
        position += velocity
        boxes = [np.r_[p - s / 2, p + s / 2] + rng.normal(0, 1.5, 4) for p, s in zip(position, size)
                 if rng.random() > 0.1]
        boxes += [np.r_[corner, corner + 30] for corner in rng.uniform(0, 300, (rng.integers(0, 2), 2))]
        scores = rng.uniform(0.05, 0.95, len(boxes)).astype(np.float32)
        yield np.array(boxes, dtype=np.float32).reshape(-1, 4), scores


@pytest.mark.parametrize("seed", range(4))
def test_the_same_tracks_as_supervisions_bytetrack(seed):
    """On the same detections, our tracks are supervision's (``sv.ByteTrack``, its defaults but the thresholds
    below): the same filtered boxes each frame, and one-to-one ids (ids relabelled)."""
    sv = pytest.importorskip("supervision")
    ours = Tracker(high=0.5, low=0.1, buffer=30)
    reference = sv.ByteTrack(track_activation_threshold=0.5, lost_track_buffer=30, minimum_matching_threshold=0.8,
                             frame_rate=30)
    id_map = {}
    for boxes, scores in noisy_scene(seed):
        n = len(scores)
        ours.update(Detections(boxes, scores, np.zeros(n, dtype=np.int64), np.array(["x"] * n)))
        shown = [t for t in ours.tracks if t.id and t.detection >= 0]
        mine = sorted(zip(track_boxes(shown).round(3).tolist(), [t.id for t in shown]))
        theirs = sorted((t.tlbr.round(3).tolist(), t.external_track_id)
                        for t in reference.update_with_tensors(np.hstack([boxes, scores[:, None]])))
        assert len(mine) == len(theirs)
        np.testing.assert_allclose([b for b, _ in mine], [b for b, _ in theirs], atol=0.01)
        for (_, our_id), (_, their_id) in zip(mine, theirs):
            assert id_map.setdefault(our_id, their_id) == their_id
    assert len(set(id_map.values())) == len(id_map) >= 6


def test_a_lost_track_under_an_older_active_one_is_dropped():
    # ByteTrack's duplicate rule: A stands at x = 100 and vanishes at frame 5; B, tracked since frame 0, walks 1 px a
    # frame to x = 103 and stays there, covering A's lost box (IoU 0.86): the one tracked for fewer frames, A, is
    # dropped. When B leaves and an object shows up at x = 100 again it gets a new id (without the rule: A's id).
    frames = []
    for t in range(30):
        b_x = 103 + max(0, 10 - t) if t < 20 else 103 + 8 * (t - 19)
        a = [(100, 100, 0.9)] if t < 5 or t >= 26 else []
        frames.append(frame((b_x, 100, 0.9), *a))
    ids = run(frames)
    a_id, b_id = ids[0][1], ids[0][0]
    assert all(found[0] == b_id for found in ids)
    assert ids[27][1] not in (a_id, b_id)


def test_iou_matrix_by_hand():
    a = np.array([[0, 0, 10, 10], [0, 0, 10, 10]], dtype=np.float32)
    b = np.array([[5, 0, 15, 10], [10, 0, 20, 10], [30, 30, 40, 40], [0, 0, 10, 10]], dtype=np.float32)
    np.testing.assert_allclose(iou_matrix(a, b), [[50 / 150, 0, 0, 1]] * 2)  # half, touching, apart, the same


def test_connected_groups_follow_chains_of_allowed_pairs():
    allowed = np.array([[1, 1, 0, 0], [0, 1, 1, 0], [0, 0, 0, 0], [0, 0, 0, 1]], dtype=bool)
    groups = [(rows.tolist(), cols.tolist()) for rows, cols in connected_groups(allowed)]
    assert groups == [([0, 1], [0, 1, 2]), ([3], [3])]  # row 2 has no allowed pair
