"""Check a dataset before training: per-class counts, box size histograms, repaired boxes and unreadable images,
and training images with their ground truth drawn after the augmentation.

    python tools/check.py --data.dataset voc --data.root ../shared/data/bccd/BCCD
    python tools/check.py --data.dataset yolo --data.root my_set.yaml --num_images 32 --output check/
"""
import sys

from detector.cli import run

if __name__ == "__main__":
    sys.exit(run("check"))
