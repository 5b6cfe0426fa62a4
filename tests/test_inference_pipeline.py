"""Around the network (``detector/inference/pipeline.py``): bfloat16 inference close to fp32, the predictor's
precision option and an unknown precision refused; the test-time passes: the tile grid, tiles and scales mapped back
to photo pixels (a stand-in network that finds a painted square), soft-NMS against its formula box by box, the
merges of scales and tiles, bad values refused."""
import math

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from helpers.hardware import needs_cpu_bf16
from helpers.networks import randomise_batchnorm

from detector.decode import decode, local_max


needs_bf16 = needs_cpu_bf16


def _trained_like_model():
    """A random model whose heatmap has a few clear peaks, like a trained one (random logits all tie near 0.1)."""
    from detector.model import CenterNet

    torch.manual_seed(0)
    model = randomise_batchnorm(CenterNet(num_classes=4))
    torch.nn.init.constant_(model.head.size[-1].bias, 4.0)  # boxes of about 16 px, not empty ones
    images = torch.randint(0, 256, (2, 3, 128, 160), dtype=torch.uint8)
    meta = torch.tensor([[1.0, 1.0, 160.0, 128.0], [0.5, 0.5, 320.0, 256.0]])
    return model, images, meta


@needs_bf16
def test_bf16_detections_are_close_to_fp32():
    from torchvision.ops import box_iou

    from detector.inference.pipeline import detect
    from detector.model.fuse import prepare_for_inference

    model, images, meta = _trained_like_model()
    fast = prepare_for_inference(model)
    full = detect(model, images, meta, k=10)
    for candidate, precision in ((fast, "fp32"), (fast, "bf16"), (model, "bf16")):
        out = detect(candidate, images, meta, k=50, precision=precision)
        tolerance = 1e-4 if precision == "fp32" else 0.03  # bf16 keeps 8 bits of mantissa
        assert torch.allclose(out["scores"][:, :10], full["scores"], atol=tolerance), precision
        for b in range(images.shape[0]):  # each fp32 detection is found again, same class, nearly the same box
            iou = box_iou(full["boxes"][b], out["boxes"][b]).nan_to_num()  # [10, 50]
            iou[full["labels"][b][:, None] != out["labels"][b][None, :]] = 0
            assert (iou.amax(1) > (0.999 if precision == "fp32" else 0.9)).all(), (precision, iou.amax(1))


@needs_bf16
def test_predictor_precision_option():
    import numpy as np

    from detector.inference.detectors import Detector

    model, _, _ = _trained_like_model()
    image = np.random.default_rng(0).integers(0, 256, (100, 150, 3), dtype=np.uint8)
    full = Detector(model, list("abcd"), 128, prepare=False).predict(image, conf=0.0)
    fast = Detector(model, list("abcd"), 128).predict(image, conf=0.0)
    low = Detector(model, list("abcd"), 128, precision="bf16").predict(image, conf=0.0)
    np.testing.assert_allclose(fast.scores, full.scores, atol=1e-4)
    np.testing.assert_allclose(low.scores[:10], full.scores[:10], atol=0.05)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in Detector(model, list("abcd"), 128).model.modules())


def test_unknown_precision_is_refused():
    from detector.inference.pipeline import check_precision

    with pytest.raises(ValueError, match="unknown precision"):
        check_precision("fp8", "cpu")


# test time: tiles, scales, soft-NMS --------------------------------------------------------------------------------

def _bright_box_run(batch, meta):
    """A stand-in network that finds the one bright (> 200) region of each letterboxed input: its box in input
    pixels (pixel i spans [i, i + 1)), mapped to original pixels by ``meta`` as ``postprocess`` does; score 0 where
    the input holds no bright pixel."""
    from detector.preprocess import unletterbox_boxes

    boxes, scores = torch.zeros(len(batch), 1, 4), torch.zeros(len(batch), 1)
    for i, image in enumerate(batch):
        ys, xs = torch.nonzero(image.min(0).values > 200, as_tuple=True)
        if len(xs):
            boxes[i, 0] = torch.tensor([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], dtype=torch.float32)
            scores[i, 0] = 0.9
    return {"boxes": unletterbox_boxes(boxes, meta), "scores": scores, "labels": torch.zeros(len(batch), 1).long()}


def _photo_with_a_square(width, height, box):
    photo = np.full((height, width, 3), 60, dtype=np.uint8)
    x0, y0, x1, y1 = box
    photo[y0:y1, x0:x1] = 250
    return photo


@pytest.mark.parametrize("width, height, tile, overlap", [(1000, 700, 256, 0.2), (257, 256, 256, 0.5),
                                                          (300, 90, 64, 0.0), (64, 40, 128, 0.25)])
def test_the_tiles_cover_the_photo_edges_included_with_the_asked_overlap(width, height, tile, overlap):
    from detector.inference.pipeline import tile_windows

    windows = tile_windows(width, height, tile, overlap)
    covered = np.zeros((height, width), dtype=int)
    for x0, y0, x1, y1 in windows:
        assert 0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height
        assert (x1 - x0, y1 - y0) == (min(tile, width), min(tile, height))  # full tiles, flush with the edges
        covered[y0:y1, x0:x1] += 1
    assert covered.min() >= 1  # every pixel, the last row and column included
    for axis, length in ((0, width), (1, height)):
        starts = sorted(set(windows[:, axis].tolist()))
        assert starts[0] == 0 and starts[-1] + min(tile, length) == length
        for a, b in zip(starts, starts[1:]):  # neighbours share at least the asked fraction of a tile
            assert a + tile - b >= overlap * tile


def test_a_box_found_in_a_tile_maps_back_to_the_photo_exactly():
    from detector.inference.pipeline import Passes, detect_tiles

    box = (203, 141, 231, 170)  # inside the second tile column and row only
    photo = _photo_with_a_square(400, 300, box)
    found = detect_tiles(_bright_box_run, photo, Passes(tile=128, overlap=0.25), size=128, k=10)
    assert found["boxes"].tolist() == [list(map(float, box))]


def test_a_box_cut_by_tile_borders_is_one_detection_after_the_merge():
    from detector.inference.pipeline import Passes, detect_tiles

    box = (100, 100, 150, 130)  # crosses the border of the tiles starting at 0 and 96 (overlap 0.25 of 128)
    photo = _photo_with_a_square(400, 300, box)
    found = detect_tiles(_bright_box_run, photo, Passes(tile=128, overlap=0.25), size=128, k=10)
    assert found["boxes"].tolist() == [list(map(float, box))]  # the whole box; the fragments merged into it


def test_an_object_wider_than_the_overlap_is_the_union_of_its_fragments():
    from detector.inference.pipeline import Passes, detect_tiles

    box = (203, 141, 231, 170)  # tiles start at 102 and 204 (overlap 0.2): each holds a part of the square only
    photo = _photo_with_a_square(400, 300, box)
    found = detect_tiles(_bright_box_run, photo, Passes(tile=128, overlap=0.2), size=128, k=10)
    assert found["boxes"].tolist() == [list(map(float, box))]


def test_the_evaluation_path_tiles_its_original_resolution_batch_and_maps_back():
    from detector.inference.pipeline import Passes, detect_passes

    box = (203, 141, 231, 170)
    images = torch.full((2, 3, 320, 416), 255, dtype=torch.uint8)  # padded to 32 like the eval batch (bright: the
    # padding must stay out of the tiles)
    images[0, :, :300, :400] = to_chw(_photo_with_a_square(400, 300, box))
    images[1, :, :100, :90] = 60
    meta = torch.tensor([[1.0, 1.0, 400.0, 300.0], [1.0, 1.0, 90.0, 100.0]])
    found = detect_passes(_bright_box_run, images, meta, Passes(tile=128, overlap=0.25), size=128, k=10)
    assert found["boxes"][0, 0].tolist() == list(map(float, box)) and found["scores"][1].max() == 0


def to_chw(image):
    return torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))


@pytest.mark.parametrize("scale", [0.5, 1.25, 2.0])
def test_a_test_scale_is_mapped_back_to_original_pixels(scale):
    from detector.inference.pipeline import detect_scales
    from detector.preprocess import letterbox

    box = (64, 32, 128, 96)
    boxed, meta = letterbox(_photo_with_a_square(320, 240, box), 128)  # scale 0.4: the square is 25.6 px
    found = detect_scales(_bright_box_run, to_chw(boxed)[None], torch.from_numpy(meta)[None], [scale], k=10)
    assert torch.allclose(found["boxes"][0, 0], torch.tensor(box, dtype=torch.float32), atol=2.5 / 0.4 / scale)
    assert found["scores"][0, 0] == pytest.approx(0.9)


def test_rescale_inputs_resizes_to_multiples_of_32_and_scales_the_meta():
    from detector.inference.pipeline import rescale_inputs

    images = torch.zeros(2, 3, 128, 160, dtype=torch.uint8)
    meta = torch.tensor([[0.5, 0.5, 320.0, 256.0], [1.0, 1.0, 160.0, 128.0]])
    resized, scaled = rescale_inputs(images, meta, 1.4)  # 179.2 -> 192, 224 -> 224: the factor each side got
    assert resized.shape == (2, 3, 192, 224) and resized.dtype == torch.uint8
    assert torch.allclose(scaled, torch.tensor([[0.5 * 224 / 160, 0.5 * 192 / 128, 320, 256],
                                                [224 / 160, 192 / 128, 160, 128]]))


def _soft_nms_by_the_formula(boxes, scores, sigma=0.5, threshold=0.001):
    """The paper's Gaussian soft-NMS written out per box: bring the best remaining box to the front, decay each later
    box by exp(-IoU^2 / sigma), drop the ones under ``threshold``. Returns {index: final score}."""
    def iou(a, b):
        w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
        h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
        inter = w * h
        return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)

    items = [[list(b), float(s), i] for i, (b, s) in enumerate(zip(boxes.tolist(), scores.tolist()))]
    n, i = len(items), 0
    while i < n:
        best = max(range(i, n), key=lambda j: items[j][1])
        items[i], items[best] = items[best], items[i]
        pos = i + 1
        while pos < n:
            items[pos][1] *= math.exp(-iou(items[i][0], items[pos][0]) ** 2 / sigma)
            if items[pos][1] < threshold:
                items[pos], items[n - 1] = items[n - 1], items[pos]
                n -= 1
            else:
                pos += 1
        i += 1
    return {index: score for _, score, index in items[:n]}


@pytest.mark.parametrize("seed", range(4))
def test_soft_nms_matches_the_formula_box_by_box(seed):
    from detector.inference.pipeline import soft_nms

    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(60, 2, generator=g) * 100
    boxes = torch.cat([xy, xy + 10 + torch.rand(60, 2, generator=g) * 40], dim=1)
    scores = torch.rand(60, generator=g) ** 3  # some under the threshold after decaying
    result = soft_nms(boxes, scores)
    expected = _soft_nms_by_the_formula(boxes, scores)
    assert set(torch.nonzero(result).flatten().tolist()) == set(expected)
    for index, score in expected.items():
        assert result[index].item() == pytest.approx(score, rel=1e-5)
    assert 0 < len(expected) < 60


def test_merging_scales_decays_the_duplicate_of_each_class_and_keeps_the_top_k():
    from detector.inference.pipeline import merge_scales

    one = {"boxes": torch.tensor([[[0.0, 0, 10, 10], [50, 50, 60, 60]]]), "scores": torch.tensor([[0.9, 0.8]]),
           "labels": torch.tensor([[0, 1]])}
    two = {"boxes": torch.tensor([[[0.0, 0, 10, 10], [50, 50, 60, 60]]]), "scores": torch.tensor([[0.7, 0.6]]),
           "labels": torch.tensor([[0, 0]])}  # a duplicate of class 0, and class 0 where class 1 was found
    merged = merge_scales([one, two], k=4)
    assert merged["scores"][0].tolist() == pytest.approx([0.9, 0.8, 0.6, 0.7 * math.exp(-1 / 0.5)])  # IoU 1
    assert merged["labels"][0].tolist() == [0, 1, 0, 0]
    assert merge_scales([one, two], k=3)["scores"][0].tolist() == pytest.approx([0.9, 0.8, 0.6])


def test_merging_tiles_drops_the_duplicates_of_other_tiles_only():
    from detector.inference.pipeline import merge_tiles

    tile_a = {"boxes": torch.tensor([[100.0, 100, 150, 130], [110.0, 100, 160, 130]]),
              "scores": torch.tensor([0.9, 0.5]), "labels": torch.tensor([0, 0])}
    tile_b = {"boxes": torch.tensor([[120.0, 100, 150, 130], [100.0, 100, 150, 130], [300.0, 0, 310, 10]]),
              "scores": torch.tensor([0.6, 0.95, 0.4]), "labels": torch.tensor([0, 1, 0])}
    merged = merge_tiles([tile_a, tile_b])
    # b's fragment inside a's box goes; a's neighbour overlapping it (same tile) stays; b's other class stays
    assert merged["scores"].tolist() == pytest.approx([0.95, 0.9, 0.5, 0.4])
    assert merged["boxes"][2].tolist() == [110.0, 100, 160, 130]


@pytest.mark.parametrize("kwargs, words", [({"tile": 31}, "tile 31"), ({"overlap": 1.0}, "overlap 1.0"),
                                           ({"overlap": -0.1}, "overlap -0.1"), ({"scales": [1, 0]}, "scales 0")])
def test_bad_test_time_values_are_refused_naming_the_option(kwargs, words):
    from detector.errors import OptionError
    from detector.inference.pipeline import check_passes

    with pytest.raises(OptionError, match=words):
        check_passes(**kwargs)
