"""Train a CenterNet detector (LightningCLI). With no arguments: the built-in synthetic set on CPU.

    python tools/train.py                                               # the packaged synthetic.yaml
    python tools/train.py --config configs/coco_resnet18.yaml --data.root /data/coco
    python tools/train.py --config configs/voc_resnet18.yaml --data.root /data/VOCdevkit
    python tools/train.py --help                                        # every option, overridable as --group.key value
"""
import sys

from detector.cli import run

if __name__ == "__main__":
    sys.exit(run("train"))
