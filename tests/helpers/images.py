"""Images for the tests: noisy RGB arrays with rectangles, uniform image files, a short video, a shapes image with
its boxes, and a PNG whose header claims more pixels than OpenCV reads."""
import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
import torch


def make_image(height, width, seed=0):
    """An ``[H, W, 3]`` uint8 RGB image with a few coloured rectangles on noise."""
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 60, (height, width, 3), dtype=np.uint8)
    for _ in range(3):
        x, y = rng.integers(0, width - 20), rng.integers(0, height - 20)
        image[y:y + 20, x:x + 30] = rng.integers(100, 255, 3)
    return image


def write_image(path: Path, width: int, height: int, value: int = 120) -> Path:
    """A uniform BGR image file (format from the suffix)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.full((height, width, 3), value, dtype=np.uint8))
    return path


def write_video(path, frames=12, size=(160, 120), fps=10.0):
    """An mp4 of ``frames`` frames: an orange box moving right on dark grey."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, size)
    for i in range(frames):
        frame = np.full((size[1], size[0], 3), 30, dtype=np.uint8)
        cv2.rectangle(frame, (10 + 5 * i, 20), (60 + 5 * i, 80), (0, 200, 255), cv2.FILLED)
        writer.write(frame)
    writer.release()
    return path


def one_image():
    """A 128x128 noisy image with three filled shapes: two squares of class 0, a bar of class 1."""
    rng = np.random.default_rng(0)
    image = rng.integers(0, 60, (128, 128, 3), dtype=np.uint8)
    boxes = np.array([[8, 10, 48, 50], [70, 60, 110, 100], [20, 80, 60, 120]], dtype=np.float32)
    colours = [(230, 40, 40), (230, 40, 40), (40, 200, 240)]
    for (x1, y1, x2, y2), colour in zip(boxes.astype(int), colours):
        image[y1:y2, x1:x2] = colour
    return image, torch.from_numpy(boxes), torch.tensor([0, 0, 1])


def huge_png(path: Path) -> Path:
    """A 69-byte PNG whose header claims 60000 x 60000 pixels (more than OpenCV's limit)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", 60000, 60000, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"")) +
                     chunk(b"IEND", b""))
    return path
