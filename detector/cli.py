"""The commands: ``centernet train|eval|demo|export|check`` (the console script) and ``tools/<command>.py`` run the
same functions here.

One flag style for all four: ``--snake_case VALUE``; the options of a group are dotted (``--data.root``,
``--trainer.max_epochs``); a boolean takes ``true`` or ``false`` (``--flip_test true``, ``--show false``); a list is
the values after its flag (``--classes circle 2``). Older spellings stay as aliases: ``--no-show`` (``--show
false``), ``--max-detections`` (``--max_detections``), and a bare ``--heatmap`` (``--heatmap true``).

Errors: the package's own errors (:class:`detector.errors.DetectorError`: dataset, checkpoint, image, weights, demo,
export) print one line ``error: <message>`` and exit with status 1; any other exception is a bug and shows its
traceback. Each command imports what it needs when it runs: ``demo`` and ``export`` never load Lightning.
"""
from __future__ import annotations

import argparse
import shlex
import sys
import warnings
from pathlib import Path
from typing import Callable

from jsonargparse import ArgumentParser

from detector.detections import DEFAULT_SCORE_THRESHOLD
from detector.errors import DetectorError
from detector.overwrite import EXIST_OK_HELP

USAGE = "usage: centernet {train,eval,demo,export,check} [options]   (centernet <command> --help: its options)"
# torch's warnings during an export that the user can do nothing about: TorchScript is deprecated (it still works,
# and is what detector/inference/export.py writes --format torchscript with). ONNX export runs the torch.export-based
# exporter, which warns of nothing.
EXPORT_NOISE = (r"`torch\.jit\.\w+` is deprecated",)
# Data options that only shape the training augmentation (the ``augment`` group): the evaluation does not offer them.
TRAIN_ONLY_DATA_OPTIONS = {"augment", "total_batch", "drop_last"}


def command_name(command: str) -> str:
    """What the user ran, for the usage line of ``command``: the script as typed (``tools/train.py``),
    ``python -m detector.cli train``, or else ``centernet train`` (the console script)."""
    script = Path(sys.argv[0])
    if script.stem == command:
        return sys.argv[0]
    if script.name == "cli.py" and script.parent.name == "detector":
        return f"python -m detector.cli {command}"
    return f"centernet {command}"


def train_main(args: list[str] | None = None):
    """``centernet train``: LightningCLI over ``detector.training.run.train``; prints the report. Returns the CLI."""
    from detector.data.detect import with_detected_dataset
    from detector.training.run import train

    cli = train(with_detected_dataset(list(sys.argv[1:] if args is None else args)), prog=command_name("train"))
    _print_train_report(cli)
    return cli


def _print_train_report(cli) -> None:
    trainer, model = cli.trainer, cli.model
    log_dir = trainer.log_dir  # a collective under DDP: every rank asks
    if not trainer.is_global_zero:
        return
    best, last = cli.best_checkpoint, cli.last_checkpoint
    if model.last_result is not None:
        validated = best if cli.reported == "best" else last
        what = f"{cli.reported} checkpoint" if validated else f"final weights (no {cli.reported} checkpoint was saved)"
        print("\n" + model.last_result.table(f"validation split, {what}"))
    callback = trainer.checkpoint_callback
    print(f"\nrun folder:  {log_dir}")
    print(f"checkpoints: {callback.dirpath if callback else 'none'} (best: {best or 'none'}, last: {last or 'none'})")
    if best or last:
        quoted = shlex.quote(best or last)
        print(f"evaluate:    python tools/eval.py --checkpoint {quoted}")
        print(f"demo:        python tools/demo.py --checkpoint {quoted} --source <video, image, folder or webcam 0>")
    if last:
        config = shlex.quote(str(Path(log_dir) / "config.yaml"))  # the run's whole configuration, overrides included
        more = " --trainer.max_steps -1" if _paused(trainer) else ""  # the saved config stops where this run did
        print(f"resume:      python tools/train.py --config {config} --ckpt_path {shlex.quote(last)}{more}")


def _paused(trainer) -> bool:
    """Whether ``--trainer.max_steps`` stopped the run before its ``max_epochs`` (a clean stop, not the end)."""
    epochs, steps = trainer.max_epochs, trainer.max_steps
    stopped = steps is not None and steps >= 0 and trainer.global_step >= steps
    return stopped and epochs is not None and epochs >= 0 and trainer.current_epoch < epochs


def eval_main(args: list[str] | None = None) -> dict[str, float]:
    """``centernet eval``: ``detector.training.evaluate.evaluate`` with the command line's options; prints the table.

    Returns the metrics as logged (``val/AP``, ``val/images``, ...), 0..1.
    """
    from pytorch_lightning.utilities import rank_zero_only

    from detector.checkpoint import load_checkpoint
    from detector.data.detect import argument_value, with_detected_dataset
    from detector.inference.pipeline import check_passes
    from detector.training.evaluate import eval_output_folder, evaluate

    args = with_detected_dataset(list(sys.argv[1:] if args is None else args))
    path = argument_value(args, "--checkpoint")
    parser = eval_parser(load_checkpoint(path) if path else None, prog=command_name("eval"))
    config = parser.parse_args(args)
    check_nms_iou(config.nms_iou, "--nms_iou")
    check_passes(config.flip_test, config.test_scales, config.tile, config.tile_overlap, config.tile_whole,
                 PASS_FLAGS)
    output = config.output or eval_output_folder(config.checkpoint)
    result = evaluate(config.checkpoint, config.data.as_dict(), flip_test=config.flip_test, nms_iou=config.nms_iou,
                      results=config.results, accelerator=config.accelerator, devices=config.devices,
                      strategy=config.strategy, precision=config.precision, output=output,
                      exist_ok=config.exist_ok, test_scales=config.test_scales, tile=config.tile,
                      tile_overlap=config.tile_overlap, tile_whole=config.tile_whole)
    if rank_zero_only.rank == 0:
        print("\n" + result.table(config.checkpoint))
        if config.results:
            print(f"detections written to {config.results}")
        print(f"results.csv, PR curves and confusion matrix written to {output}")
    return {f"val/{name}": value for name, value in result.metrics.items()}


def eval_parser(checkpoint: dict | None = None, prog: str = "centernet eval") -> ArgumentParser:
    """The options of ``detector.training.evaluate.evaluate``; the ``--data.*`` defaults are the checkpoint's
    training data if given."""
    from detector.data.datamodule import DetectionDataModule
    from detector.training.evaluate import training_data_options

    parser = ArgumentParser(prog=prog, description=(
        "Evaluate a checkpoint with the COCO metric (and VOC07 mAP on VOC). The dataset defaults to the one the "
        "checkpoint was trained on; any --data.* option overrides it (e.g. --data.val_json/--data.val_images "
        "for your own COCO-format split). The --data.* defaults are the checkpoint's: --checkpoint X --help "
        "shows them."))
    parser.add_argument("--checkpoint", type=str, required=True, help="a .ckpt written by centernet train")
    parser.add_class_arguments(DetectionDataModule, "data", skip=TRAIN_ONLY_DATA_OPTIONS)
    parser.add_argument("--flip_test", type=bool, default=False, help="average each image with its mirror")
    add_passes_arguments(parser, "evaluated at its original resolution (--data.eval_size is then ignored)")
    parser.add_argument("--nms_iou", type=float | None, default=None, help="class-wise NMS IoU after decoding")
    parser.add_argument("--results", type=str | None, default=None,
                        help="write the detections here as a COCO results json (dataset category ids)")
    parser.add_argument("--output", type=str | None, default=None,
                        help="folder for results.csv, PR_curve.png and the confusion matrix (default: a new val, "
                             "val2, ... folder in the checkpoint's run folder)")
    parser.add_argument("--exist_ok", type=bool, default=False, help=EXIST_OK_HELP)
    parser.add_argument("--accelerator", type=str, default="auto", help="cpu, gpu, auto, ...")
    parser.add_argument("--precision", type=str | None, default=None, help="e.g. bf16-mixed, 16-mixed")
    parser.add_argument("--devices", type=int, default=1, help="devices (processes) to evaluate on")
    parser.add_argument("--strategy", type=str, default="auto", help="e.g. ddp to split the set over --devices")
    known = parser.get_defaults().data
    if checkpoint is None:  # no default to show: each is the checkpoint's
        parser.set_defaults({f"data.{k}": argparse.SUPPRESS for k in known.keys()})
    else:
        parser.set_defaults({f"data.{k}": v for k, v in training_data_options(checkpoint).items() if k in known})
    return parser


def add_passes_arguments(parser: ArgumentParser, photo: str) -> None:
    """``--test_scales``, ``--tile``, ``--tile_overlap``, ``--tile_whole`` (``inference.pipeline.Passes``); ``photo``:
    what the command does to the photo for tiles."""
    parser.add_argument("--test_scales", type=float, nargs="+", default=None,
                        help="multi-scale test: run each image resized by each scale (e.g. 0.75 1 1.25; sides rounded "
                             "to multiples of 32) and merge them by soft-NMS, as the paper's code does (torch only)")
    parser.add_argument("--tile", type=int | None, default=None,
                        help="sliced inference for small objects in large photos: cut each photo into overlapping "
                             f"tiles of this many pixels (at least 32), each letterboxed to the input size; {photo}")
    parser.add_argument("--tile_overlap", type=float, default=0.2,
                        help="with --tile: the fraction of a tile its neighbour shares, in [0, 1)")
    parser.add_argument("--tile_whole", type=bool, default=False,
                        help="with --tile: also detect on the whole photo (for the objects larger than a tile)")


# The names the errors of ``inference.pipeline.check_passes`` give its options, in the eval and demo commands.
PASS_FLAGS = {"tile": "--tile", "overlap": "--tile_overlap", "scales": "--test_scales"}


def demo_parser() -> ArgumentParser:
    parser = ArgumentParser(prog=command_name("demo"), description=(
        "Run a trained detector on a webcam, a video, a stream, an image or a folder of images; q or Esc quits."))
    parser.add_argument("--checkpoint", type=str | None, default=None, help="training checkpoint (torch backend)")
    parser.add_argument("--source", type=str, required=True,
                        help="webcam index, video file, stream URL, image or folder of images")
    parser.add_argument("--output", type=str | None, default=None,
                        help="annotated video file (video sources), folder (image sources) or image file (one image); "
                             "never a source file or the source folder")
    parser.add_argument("--save_json", type=str | None, default=None,
                        help="write the detections to this COCO-style results json (image_id, category_id: the "
                             "dataset's ids, bbox xywh in pixels, score, file_name, frame for a video)")
    parser.add_argument("--save_txt", type=str | None, default=None,
                        help="write one YOLO label file per image or frame into this folder (class cx cy w h score, "
                             "normalised; <image stem>.txt or <video stem>_<frame>.txt)")
    parser.add_argument("--save_mot", type=str | None, default=None,
                        help="with --track: write the tracks to this MOTChallenge text file (frame,id,x,y,w,h,score,"
                             "-1,-1,-1; frames from 1, boxes in pixels)")
    parser.add_argument("--exist_ok", type=bool, default=False, help=EXIST_OK_HELP)
    parser.add_argument("--txt_scores", type=bool, default=True,
                        help="false: --save_txt files without the score column (plain YOLO labels)")
    parser.add_argument("--conf", type=float, default=DEFAULT_SCORE_THRESHOLD, help="score threshold")
    parser.add_argument("--classes", type=str, nargs="+", default=None, help="only these classes (names or indices)")
    parser.add_argument("--heatmap", type=bool, nargs="?", const=True, default=False,
                        help="overlay the class heatmaps (of --classes if given; torch backend)")
    parser.add_argument("--agnostic", type=bool, nargs="?", const=True, default=False,
                        help="class-agnostic suppression: of boxes of different classes on one object, keep the best")
    parser.add_argument("--flip_test", type=bool, default=False,
                        help="average each frame with its mirror (torch backend; about twice the network time)")
    add_passes_arguments(parser, "for photos, not for real-time video")
    parser.add_argument("--track", type=bool, nargs="?", const=True, default=False,
                        help="follow objects through the frames (ByteTrack): a stable id on each box, in --save_json "
                             "(track_id) and --save_mot; boxes scoring from --track_low up to --conf continue tracks")
    parser.add_argument("--track_low", type=float | None, default=None,
                        help="with --track: the lowest score of a box that may continue a track (default 0.1, or "
                             "--conf if lower)")
    parser.add_argument("--track_buffer", type=int | None, default=None,
                        help="with --track: frames a lost object's id is kept for it to come back (default 30)")
    parser.add_argument("--show", type=bool, default=True, help="show a window (when a display can be used)")
    parser.add_argument("--no-show", dest="no_show", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--device", type=str | None, default=None,
                        help="torch device, e.g. cpu or cuda:0 (default: cuda when available, else cpu; cpu for "
                             "--precision int8 and --runtime onnxruntime or openvino)")
    parser.add_argument("--threads", type=int | None, default=None,
                        help="CPU threads of torch or onnxruntime (on a busy machine, 1 can be much faster)")
    parser.add_argument("--precision", choices=["fp32", "bf16", "int8"], default=None,
                        help="fp32 (default); bf16: bfloat16 autocast, ~3x faster on CPUs with AVX512-BF16/AMX and on "
                             "GPUs (torch backend); int8: the network quantized by ONNX Runtime's quantizer, run on "
                             "the CPU by --runtime (torch backend: needs --calibration; onnx backend: a file exported "
                             "with --precision int8)")
    parser.add_argument("--calibration", type=str | None, default=None,
                        help="training images (folder or glob) to calibrate --precision int8 on (torch backend)")
    parser.add_argument("--backend", choices=["torch", "onnx"], default="torch",
                        help="torch: a training checkpoint (--checkpoint); onnx: a file written by centernet export")
    parser.add_argument("--runtime", choices=["auto", "torch", "onnxruntime", "openvino"], default="auto",
                        help="with --backend torch and a checkpoint: what runs the network; auto: the fastest "
                             "installed for the device and precision (fp32 on a CPU: onnxruntime when installed, "
                             "else torch; int8: openvino when installed, else onnxruntime); onnxruntime and openvino "
                             "export it (cached per checkpoint, any input size) and run it on the CPU (onnxruntime "
                             "fp32: about 1.2x as fast as torch on the project's 2-core CPU, bench/RESULTS.md)")
    parser.add_argument("--onnx", type=str | None, default=None,
                        help="ONNX model written by centernet export (with --backend onnx)")
    return parser


def demo_main(args: list[str] | None = None) -> None:
    """``centernet demo``: open the source and output, load the detector, run the loop, print the report."""
    import torch

    from detector.demo.loop import DemoOptions, run_demo
    from detector.demo.outputs import check_results, open_results, open_sink, output_guard
    from detector.inference.detectors import Detector, OnnxDetector, pick_device
    from detector.inference.pipeline import check_passes, resolve_classes
    from detector.inference.sources import open_source

    parser = demo_parser()
    config = parser.parse_args(list(sys.argv[1:] if args is None else args))
    check_score_threshold(config.conf, "--conf")
    track_low, track_buffer = check_tracking(config)
    if config.backend == "torch" and not config.checkpoint:
        parser.error("--checkpoint is required with --backend torch")
    if config.backend == "onnx" and (not config.onnx or config.heatmap or config.precision == "bf16"
                                     or config.device not in (None, "cpu") or config.flip_test):
        parser.error("--backend onnx needs --onnx model.onnx, runs on the CPU in fp32 or int8 (no --device cuda, "
                     "no --precision bf16) and cannot draw --heatmap or run --flip_test")
    if config.heatmap and (config.tile or config.test_scales):
        parser.error("--heatmap draws one pass of the network: leave out --tile and --test_scales to draw it")
    check_passes(config.flip_test, config.test_scales, config.tile, config.tile_overlap, config.tile_whole,
                 PASS_FLAGS)
    if config.threads:
        torch.set_num_threads(config.threads)
    source = open_source(config.source)
    guard = output_guard(source, [config.checkpoint, config.onnx, config.calibration], config.exist_ok)
    # every output checked before any is opened
    check_results(source, config.save_json, config.save_txt, guard, config.save_mot)
    sink = open_sink(config.output, source, guard)
    if config.backend == "onnx":
        detector = OnnxDetector(config.onnx, threads=config.threads)
        if config.precision not in (None, detector.precision):
            raise SystemExit(f"error: {config.onnx} is {detector.precision}, not {config.precision}: for int8, export "
                             "it with centernet export --precision int8 --calibration <training images>")
        print(f"device: cpu; onnxruntime backend, {detector.precision}")
    else:
        precision = config.precision or "fp32"
        runtime = config.runtime
        if precision == "int8" and runtime == "torch":
            parser.error("--precision int8 runs the quantized network in onnxruntime or openvino, not torch: leave "
                         "--runtime out (auto) or give --runtime onnxruntime or openvino")
        # the Detector's rule, with errors naming the flag (int8 and onnxruntime: the CPU unless asked)
        exported = precision == "int8" or runtime in ("onnxruntime", "openvino")
        device = pick_device(config.device, exported, "--device")
        detector = _usage(parser, lambda: Detector.from_checkpoint(config.checkpoint, device, precision=precision,
                                                                   calibration=config.calibration,
                                                                   runtime=runtime))
        by = f", network run by {detector.runtime}" if detector.runtime != "torch" else ""
        print(f"device: {describe_device(device)}; torch backend, {precision}{by}")
    classes = _usage(parser, lambda: resolve_classes(config.classes, detector.class_names))
    passes = detector.passes(config.flip_test, config.test_scales, config.tile, config.tile_overlap,
                             config.tile_whole, PASS_FLAGS)
    options = DemoOptions(config.conf, classes, config.heatmap, show=config.show and not config.no_show,
                          agnostic=config.agnostic, passes=passes, track=config.track, track_low=track_low,
                          track_buffer=track_buffer)
    results = open_results(source, config.save_json, config.save_txt, detector.category_ids, config.txt_scores,
                           guard, config.save_mot)
    report = run_demo(detector, source, sink, options, results)
    print(report.summary())
    if report.frames == 0 and not report.stopped:
        raise SystemExit(f"error: no frame of {config.source} could be read")
    for flag, path in (("output", config.output), ("detections json", config.save_json),
                       ("label files", config.save_txt), ("tracks", config.save_mot)):
        if path:
            print(f"{flag}: {path}")


def check_tracking(config) -> tuple[float, int]:
    """The demo's tracking flags: ``--save_mot``, ``--track_low`` and ``--track_buffer`` need ``--track``, and the
    thresholds must make sense with ``--conf`` (:class:`OptionError` naming the flag). Returns (low or None: the
    tracker's default, buffer)."""
    from detector.errors import OptionError
    from detector.inference.track import BUFFER_FRAMES, check_tracker_options

    buffer = BUFFER_FRAMES if config.track_buffer is None else config.track_buffer
    if not config.track:
        for flag, value in (("--save_mot", config.save_mot), ("--track_low", config.track_low),
                            ("--track_buffer", config.track_buffer)):
            if value is not None:
                raise OptionError(f"{flag} {value}: only with --track (tracks give the ids); add --track")
    check_tracker_options(config.conf, config.track_low, buffer,
                          names=("--conf", "--track_low", "--track_buffer", "new"), error=OptionError)
    return config.track_low, buffer


def check_score_threshold(conf: float, flag: str) -> None:
    """A score threshold is a probability: :class:`OptionError` naming ``flag`` otherwise (0 keeps everything)."""
    from detector.errors import OptionError

    if not 0 <= conf <= 1:
        raise OptionError(f"{flag} {conf}: a score threshold is between 0 and 1 (default {DEFAULT_SCORE_THRESHOLD})")


def check_nms_iou(iou: float | None, flag: str) -> None:
    """An NMS IoU is above 0 and at most 1 (None: no NMS): :class:`OptionError` naming ``flag`` otherwise."""
    from detector.errors import OptionError

    if iou is not None and not 0 < iou <= 1:
        raise OptionError(f"{flag} {iou}: an NMS IoU is above 0 and at most 1 (or leave it out: no NMS)")


def describe_device(device) -> str:
    """``cpu (N threads)`` or ``cuda:0 (<GPU name>)``."""
    import torch

    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    threads = torch.get_num_threads()
    return f"cpu ({threads} thread{'s' if threads > 1 else ''})"


def _usage(parser: ArgumentParser, make: Callable):
    """``make()``, with a ``ValueError`` of the user's choice (an unknown class, bf16 on a CPU without it) reported
    as a usage error; the package's own errors pass through."""
    try:
        return make()
    except DetectorError:
        raise
    except ValueError as error:
        parser.error(str(error))


def export_parser() -> ArgumentParser:
    parser = ArgumentParser(prog=command_name("export"), description=(
        "Export a trained checkpoint with decoding inside the graph (contract in detector/inference/export.py)."))
    parser.add_argument("--checkpoint", type=str, required=True, help="training checkpoint")
    parser.add_argument("--format", choices=["onnx", "torchscript"], default="onnx", help="the file's format")
    parser.add_argument("--output", type=str, required=True, help="file to write, e.g. model.onnx or model.pt")
    parser.add_argument("--exist_ok", type=bool, default=False, help=EXIST_OK_HELP)
    parser.add_argument("--max_detections", "--max-detections", type=int, default=100,
                        help="K, detections per image")
    parser.add_argument("--precision", choices=["fp32", "int8"], default="fp32",
                        help="int8: the network quantized by ONNX Runtime (ONNX only; needs --calibration)")
    parser.add_argument("--calibration", type=str | None, default=None,
                        help="training images (folder or glob) to calibrate --precision int8 on (32 are read)")
    return parser


def export_main(args: list[str] | None = None) -> None:
    """``centernet export``: write the checkpoint's network as ONNX or TorchScript."""
    from detector.inference.export import export_checkpoint

    parser = export_parser()
    config = parser.parse_args(list(sys.argv[1:] if args is None else args))
    if config.precision == "int8" and config.format != "onnx":
        parser.error("--precision int8 exports ONNX only (ONNX Runtime runs it): use --format onnx")
    with warnings.catch_warnings():
        for message in EXPORT_NOISE:
            warnings.filterwarnings("ignore", message=message)
        path = export_checkpoint(config.checkpoint, config.format, config.output, config.max_detections,
                                 config.precision, config.calibration, config.exist_ok)
    print(f"wrote {path} ({config.format}, {config.precision}; input images uint8 [B, 3, S, S] letterboxed RGB; "
          f"outputs boxes, scores, labels)")


def check_parser() -> ArgumentParser:
    from detector.data.datamodule import DetectionDataModule

    parser = ArgumentParser(prog=command_name("check"), description=(
        "Check a dataset before training: per-class counts, box size histograms, the readers' warnings, and "
        "training images with their boxes drawn after the augmentation. Takes training's --data.* options."))
    parser.add_class_arguments(DetectionDataModule, "data")
    parser.add_argument("--num_images", type=int, default=16, help="training images to draw")
    parser.add_argument("--output", type=str | None, default=None,
                        help="folder to write into (default runs/check/<dataset name>, numbered <name>2, ... "
                             "when it exists)")
    parser.add_argument("--exist_ok", type=bool, default=False, help=EXIST_OK_HELP)
    return parser


def check_main(args: list[str] | None = None):
    """``centernet check``: ``detector.check.check_dataset`` with the command line's options; prints the report."""
    from detector.check import check_dataset, default_output
    from detector.data.datamodule import DetectionDataModule
    from detector.data.detect import with_detected_dataset
    from detector.overwrite import numbered

    config = check_parser().parse_args(with_detected_dataset(list(sys.argv[1:] if args is None else args)))
    data = config.data.as_dict()
    output = config.output or numbered(default_output(data["dataset"], data["root"], data["train_json"]))
    report = check_dataset(DetectionDataModule(**data), output, config.num_images, config.exist_ok)
    print(report.summary())
    return report


COMMANDS: dict[str, Callable] = {"train": train_main, "eval": eval_main, "demo": demo_main, "export": export_main,
                                 "check": check_main}


def run(command: str, args: list[str] | None = None) -> int:
    """Run one command; the package's own errors become ``error: <message>`` on stderr and exit status 1."""
    try:
        COMMANDS[command](args)
    except DetectorError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    """The ``centernet`` console script: ``centernet <command> [options]``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return 0 if argv else 2
    if argv[0] not in COMMANDS:
        print(f"{USAGE}\nerror: unknown command {argv[0]!r}", file=sys.stderr)
        return 2
    return run(argv[0], argv[1:])


if __name__ == "__main__":
    sys.exit(main())
