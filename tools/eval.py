"""Evaluate a trained checkpoint with the COCO metric (and VOC07 mAP on VOC).

    python tools/eval.py --checkpoint runs/synthetic/version_0/checkpoints/best-epoch011.ckpt
    python tools/eval.py --checkpoint best.ckpt --data.dataset coco --data.root /data/coco --flip_test true
    python tools/eval.py --checkpoint best.ckpt --data.val_json my.json --data.val_images my_images/ --results out.json
"""
import sys

from detector.cli import run

if __name__ == "__main__":
    sys.exit(run("eval"))
