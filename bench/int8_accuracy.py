"""AP of one checkpoint in fp32 and in int8 (``Detector(precision="int8")``, run by ONNX Runtime and, when it is
installed, by OpenVINO: the same quantized network), on its validation split.

Both run through ``Detector.infer`` on the validation loader's batches (the evaluation's letterbox at the
checkpoint's input size) and are scored by the same ``Evaluator`` (COCO AP). The int8 network is calibrated on
``--calibration_images`` training images of the same dataset, letterboxed as at inference.

The seconds printed are a side figure (evaluation included). Threads: each int8 network (ONNX Runtime session,
OpenVINO compiled model) takes torch's count (``--threads``) when the Detector is built; checked here, with torch's
count after the evaluations.

    python bench/int8_accuracy.py --checkpoint best.ckpt [--dataset voc --root BCCD] [--calibration_images 32]
"""
from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse
import inspect
import time

import torch

from detector import Detector
from detector.training.evaluate import training_data_options
from detector.checkpoint import load_checkpoint
from detector.data.datamodule import DetectionDataModule
from detector.evaluation import Evaluator
from detector.inference.fastest import installed


def evaluate(detector: Detector, datamodule: DetectionDataModule) -> tuple[float, float, float]:
    """(AP, AP50, seconds) of ``detector`` on the validation split."""
    evaluator = Evaluator(datamodule.val_coco, datamodule.category_ids)
    start = time.perf_counter()
    for batch in datamodule.val_dataloader():
        detections, _, _ = detector.infer(batch["images"], batch["meta"])
        evaluator.update(batch["image_ids"], detections)
    metrics = evaluator.compute().metrics
    return metrics["AP"], metrics["AP50"], time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--dataset", default=None, help="as --data.dataset (default: the checkpoint's)")
    parser.add_argument("--root", default=None, help="as --data.root (default: the checkpoint's)")
    parser.add_argument("--calibration_images", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    options = training_data_options(load_checkpoint(args.checkpoint))
    options.update({k: v for k, v in (("dataset", args.dataset), ("root", args.root)) if v is not None})
    options.update(eval_size="input", num_workers=0, batch_size=8)
    known = inspect.signature(DetectionDataModule).parameters
    datamodule = DetectionDataModule(**{k: v for k, v in options.items() if k in known})
    datamodule.setup("fit")
    train = datamodule.train_dataset
    step = max(1, len(train) // args.calibration_images)  # spread over the split
    calibration = [str(a.file) for a in train.annotations[::step][:args.calibration_images]]
    fp32 = Detector.from_checkpoint(args.checkpoint)
    detectors = {f"fp32 ({fp32.runtime})": fp32}
    for runtime in ("onnxruntime", "openvino"):
        if runtime == "openvino" and not installed("openvino"):
            print("note: no OpenVINO int8 row (openvino is not installed)")
            continue
        int8 = Detector.from_checkpoint(args.checkpoint, precision="int8", calibration=calibration, runtime=runtime)
        detectors[f"int8 ({runtime})"] = int8
        threads = (int8.network.session.get_session_options().intra_op_num_threads if runtime == "onnxruntime"
                   else int8.network.compiled.get_property("INFERENCE_NUM_THREADS"))
        if threads != args.threads:
            raise RuntimeError(f"the int8 {runtime} network has {threads} threads, torch {args.threads}")
    print(f"{args.checkpoint}: {options['dataset']} validation, {len(datamodule.val_dataset)} images, "
          f"letterbox {fp32.input_size}, int8 calibrated on {len(calibration)} training images")
    for name, detector in detectors.items():
        ap, ap50, seconds = evaluate(detector, datamodule)
        print(f"  {name}: AP {100 * ap:.2f}  AP50 {100 * ap50:.2f}  ({seconds:.0f} s)")
    if torch.get_num_threads() != args.threads:
        raise RuntimeError(f"torch's threads changed during the run: {args.threads} -> {torch.get_num_threads()}")


if __name__ == "__main__":
    main()
