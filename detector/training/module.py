"""The LightningModule: orchestrates a ``CenterNet`` network's loss, optimiser, logging and the evaluator calls."""
from __future__ import annotations

import dataclasses
import warnings
from dataclasses import dataclass, field, replace
from typing import Literal

import pytorch_lightning as pl
import torch
from pytorch_lightning.utilities import rank_zero_info, rank_zero_warn

from detector.checkpoint import CHECKPOINT_KEY, ModelDescription, build_model, load_checkpoint, load_fitting_weights
from detector.decode import decode
from detector.errors import OptionError
from detector.evaluation import EvalResult, Evaluator
from detector.inference.pipeline import Passes, detect_passes, forward_images, postprocess
from detector.losses import CenterNetLoss
from detector.model import CenterNet
from detector.model.centernet import NeckName
from detector.model.neck import UpconvInit
from detector.plots import TRAIN_LOSSES
from detector.targets import RadiusRule, encode, ignore_regions
from detector.training.schedule import check_schedule, lr_factor, training_steps
from detector.visualize import prediction_grid


@dataclass(frozen=True)
class OptimOptions:
    """The optimiser and its learning-rate schedule (``--model.optim.*``; YAML ``model: {optim: {...}}``).

    Args:
        lr: Adam learning rate for a total batch of ``lr_batch_size`` images.
        lr_batch_size: the total batch ``lr`` was tuned for; the learning rate used is
            ``lr * (batch_size * devices * num_nodes * accumulate_grad_batches) / lr_batch_size`` (linear scaling).
            Null: use ``lr`` as given.
        weight_decay: Adam weight decay.
        schedule: ``step`` (x ``gamma`` at each epoch of ``milestones``) or ``cosine`` (to 0 at the last epoch).
        milestones: epochs of the step schedule's drops (default 90, 120: the paper's COCO recipe).
        gamma: the step schedule's factor.
        warmup_epochs: linear warmup from 1/10 of the learning rate, in epochs (fractions allowed); 0 disables it.
    """

    lr: float = 5e-4
    lr_batch_size: int | None = None
    weight_decay: float = 0.0
    schedule: Literal["step", "cosine"] = "step"
    milestones: list[int] = field(default_factory=lambda: [90, 120])
    gamma: float = 0.1
    warmup_epochs: float = 0.0


def check_module_options(optim: OptimOptions, head_channels: int, max_detections: int, nms_iou: float | None,
                         nonfinite_limit: int) -> None:
    """Refuse a ``--model.*`` option out of its range (:class:`OptionError` naming the flag and the range), before
    any run folder is made."""
    checks = [
        (optim.lr >= 0, "optim.lr", optim.lr, "0 or more"),
        (optim.lr_batch_size is None or optim.lr_batch_size >= 1, "optim.lr_batch_size", optim.lr_batch_size,
         "at least 1 (or null)"),
        (optim.weight_decay >= 0, "optim.weight_decay", optim.weight_decay, "0 or more"),
        (optim.gamma > 0, "optim.gamma", optim.gamma, "positive"),
        (optim.warmup_epochs >= 0, "optim.warmup_epochs", optim.warmup_epochs, "0 (off) or more"),
        (all(m >= 0 for m in optim.milestones), "optim.milestones", list(optim.milestones), "epochs, 0 or more"),
        (head_channels >= 1, "head_channels", head_channels, "at least 1"),
        (max_detections >= 1, "max_detections", max_detections, "at least 1"),
        (nms_iou is None or 0 < nms_iou <= 1, "nms_iou", nms_iou, "an IoU above 0, at most 1 (or null)"),
        (nonfinite_limit >= 1, "nonfinite_limit", nonfinite_limit, "at least 1"),
    ]
    for ok, flag, value, wanted in checks:
        if not ok:
            raise OptionError(f"--model.{flag} {value}: must be {wanted}")


class CenterNetModule(pl.LightningModule):
    """Trains and validates a ``CenterNet``.

    Args:
        num_classes: number of classes (linked from the data module by ``tools/train.py``).
        class_names: class names in label order (linked from the data module).
        category_ids: the dataset's category id of each label, for COCO results files (linked from the data module).
        input_size: square training input size in pixels (linked from the data module).
        neck: ``lean`` (the fast default), ``dcn`` (the paper's ResNet-18 + DCN) or ``deconv`` (its plain variant).
        weights: backbone weights: ``imagenet`` (download), null (random init) or a local ``.pth`` path.
        head_channels: hidden width of each head.
        optim: the optimiser and its learning-rate schedule, an :class:`OptimOptions` (or a dict of its fields).
        max_detections: detections kept per image (top-K of decoding).
        flip_test: average the heatmaps of each validation image and its mirror.
        nms_iou: class-wise NMS at this IoU after decoding (null: off, the paper's default; peaks are the NMS).
        ignore_crowd: COCO ``iscrowd`` regions are neither positives nor negatives of the heatmap loss.
        radius: the extent of each object's heatmap Gaussian: ``paper`` (the formula the paper's numbers were
            obtained with), ``exact`` (CornerNet's rule solved correctly) or ``elliptical`` (scaled with the box,
            the default: +1.9 AP over ``paper`` on real photos, ``bench/RESULTS.md``); see ``detector.targets``.
        init_from: fine-tune from this checkpoint of the detector, possibly trained on other classes: every weight
            is kept except the class heatmap head, which starts afresh (kept too from a checkpoint of the same
            classes: a fine-tune with a new schedule). Step, epoch, optimiser and schedule start afresh.
        nonfinite_limit: a step whose loss is NaN or infinite is skipped (zero gradient) with a warning and
            counted; after this many such steps in a row training stops with an error.
        voc07: validation also computes the VOC07 mAP (linked from the data by the training run: true on VOC).
        upconv_init: ``dcn`` only, how its up-convolutions start: ``diagonal`` (ours, the default: each channel
            upsampled bilinearly on its own) or ``official`` (the paper's code: the bilinear kernel into output
            channel 0 only, the rest random; the paper configs). A checkpoint's weights replace either.
    """

    def __init__(
        self,
        num_classes: int = 1,
        class_names: list[str] | None = None,
        category_ids: list[int] | None = None,
        input_size: int = 256,
        neck: NeckName = "lean",
        weights: str | None = None,
        head_channels: int = 64,
        optim: OptimOptions = OptimOptions(),
        max_detections: int = 100,
        flip_test: bool = False,
        nms_iou: float | None = None,
        ignore_crowd: bool = True,
        radius: RadiusRule = "elliptical",
        init_from: str | None = None,
        nonfinite_limit: int = 20,
        voc07: bool = False,
        upconv_init: UpconvInit = "diagonal",
    ):
        super().__init__()
        self.optim = OptimOptions(**optim) if isinstance(optim, dict) else optim
        check_module_options(self.optim, head_channels, max_detections, nms_iou, nonfinite_limit)
        optim = dataclasses.asdict(self.optim)  # the hparams hold plain values: checkpoints load weights_only
        self.save_hyperparameters()
        self.class_names = list(class_names) if class_names else [str(i) for i in range(num_classes)]
        self.category_ids = list(category_ids) if category_ids else list(range(num_classes))
        self.model = build_model(ModelDescription(
            num_classes=num_classes, class_names=self.class_names, category_ids=self.category_ids,
            input_size=input_size, neck=neck, head_channels=head_channels), weights=weights, upconv_init=upconv_init)
        if init_from:
            self._init_from(init_from)
        self.criterion = CenterNetLoss()
        self.nonfinite_steps = 0  # skipped steps in this run
        self._nonfinite_streak = 0
        self.results_path: str | None = None  # set by detector.training.evaluate.evaluate to write the detections json
        self.passes: Passes | None = None  # set by evaluate: test scales and tiles (their flip is flip_test's)
        self.last_result: EvalResult | None = None
        self.evaluator: Evaluator | None = None
        self._loss_sums: torch.Tensor | None = None  # [TRAIN_LOSSES + 1]: the losses summed since the last row, steps

    @classmethod
    def around(cls, network: CenterNet, description: ModelDescription, **options) -> CenterNetModule:
        """A module orchestrating ``network`` (a checkpoint's, from ``checkpoint.build_model``), whose classes and
        shape ``description`` gives; ``options``: the other arguments (``flip_test``, ``nms_iou``, ``voc07``...)."""
        module = cls(num_classes=description.num_classes, class_names=description.class_names,
                     category_ids=description.category_ids, input_size=description.input_size,
                     neck=description.neck, head_channels=description.head_channels, **options)
        module.model = network
        return module

    def _init_from(self, path: str) -> None:
        """Every weight of ``path`` that fits; the class heatmap head only from a checkpoint of this run's classes."""
        kept, total, same_classes = load_fitting_weights(self.model, load_checkpoint(path), self.class_names)
        heads = "the same classes: the heatmap head too" if same_classes else "the class heatmap head is new"
        rank_zero_info(f"initialised {kept} of {total} tensors from {path} ({heads})")

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.model(images)

    def setup(self, stage: str) -> None:
        """Train and validate in the channels_last layout: on the CPU (oneDNN) the training step measured ~10%
        faster than NCHW (bench/RESULTS.md, issue 16), and it is the layout GPU convolutions under AMP want.
        Checkpoints are unaffected (``load_state_dict`` copies into whatever layout the network has)."""
        self.model.to(memory_format=torch.channels_last)

    @staticmethod
    def _images(batch: dict) -> torch.Tensor:
        return batch["images"].contiguous(memory_format=torch.channels_last)

    # training ---------------------------------------------------------------------------------------------------

    def _targets(self, batch: dict, output_size: tuple[int, int]) -> dict[str, torch.Tensor]:
        hp = self.hparams
        targets = encode(batch["boxes"], batch["labels"], batch["mask"], hp.num_classes, output_size,
                         self.model.stride, radius=hp.radius)
        if hp.ignore_crowd and "crowd_boxes" in batch and batch["crowd_boxes"].shape[1]:
            regions = ignore_regions(batch["crowd_boxes"], batch["crowd_mask"], output_size, self.model.stride)
            targets["ignore"] = regions & targets["heatmap"].lt(1)
        return targets

    def _loss(self, batch: dict, outputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return self.criterion(outputs, self._targets(batch, tuple(outputs["heatmap"].shape[-2:])))

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        parts = self._loss(batch, forward_images(self.model, self._images(batch)))
        batch_size = batch["images"].shape[0]
        if not torch.isfinite(parts["loss"]):
            return self._skip_nonfinite(parts, batch)
        self._nonfinite_streak = 0
        self._add_train_losses(parts)
        self.log("train/loss", parts["loss"], prog_bar=True, batch_size=batch_size, on_epoch=True)
        for name in ("heatmap", "offset", "size"):
            self.log(f"train/{name}", parts[name], batch_size=batch_size)
        return parts["loss"]

    def _add_train_losses(self, parts: dict[str, torch.Tensor]) -> None:
        values = torch.stack([parts[name].detach().float() for name in TRAIN_LOSSES] + [parts["loss"].new_ones(())])
        self._loss_sums = values if self._loss_sums is None else self._loss_sums + values

    def on_train_epoch_end(self) -> None:
        files = getattr(self.trainer.datamodule, "bad_image_files", 0)
        reads = getattr(self.trainer.datamodule, "bad_image_count", 0)
        self.log("data/bad_images", float(files), rank_zero_only=True)
        if files:
            rank_zero_warn(f"{files} unreadable image files so far ({reads} reads of them were each replaced by "
                           "another image; the warnings above name them)")

    def _skip_nonfinite(self, parts: dict[str, torch.Tensor], batch: dict) -> torch.Tensor:
        """A zero loss connected to every parameter: every DDP rank still runs the same backward, no NaN enters."""
        self.nonfinite_steps += 1
        self._nonfinite_streak += 1
        values = ", ".join(f"{k} {float(v.detach()):.4g}" for k, v in parts.items())
        warnings.warn(f"non-finite loss at step {self.global_step} ({values}; images {batch['image_ids'].tolist()}): "
                      f"step skipped, {self.nonfinite_steps} so far")
        if self._nonfinite_streak >= self.hparams.nonfinite_limit:
            raise FloatingPointError(
                f"{self._nonfinite_streak} steps in a row had a non-finite loss; stopping instead of training a NaN "
                "model. Lower the learning rate, use --trainer.gradient_clip_val, or check the data.")
        self.log("train/nonfinite_steps", float(self.nonfinite_steps), batch_size=batch["images"].shape[0])
        return sum(p.sum() * 0.0 for p in self.parameters() if p.requires_grad)

    # validation -------------------------------------------------------------------------------------------------

    def on_validation_epoch_start(self) -> None:
        self.evaluator = Evaluator(self.trainer.datamodule.val_coco, self.category_ids, voc07=self.hparams.voc07,
                                   results_path=self.results_path, setting=self.eval_description())

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        hp = self.hparams
        if self.passes is not None and not self.passes.plain:
            return self._validate_passes(batch, replace(self.passes, flip=hp.flip_test))
        outputs = forward_images(self.model, self._images(batch), flip=hp.flip_test)
        if not hp.flip_test:  # the loss needs the plain outputs
            self.log("val/loss", self._loss(batch, outputs)["loss"], batch_size=batch["images"].shape[0],
                     sync_dist=True)
        if batch_idx == 0:
            self._log_prediction_grid(batch, outputs)
        self.evaluator.update(batch["image_ids"],
                              postprocess(outputs, batch["meta"], self.model.stride, hp.max_detections, hp.nms_iou),
                              image_sizes=batch["meta"][:, 2:4])

    def _validate_passes(self, batch: dict, test: Passes) -> None:
        """Validation through ``pipeline.detect_passes`` (test scales, tiles): no loss, no prediction grid."""
        hp = self.hparams

        def run(images: torch.Tensor, meta: torch.Tensor) -> dict[str, torch.Tensor]:
            images = images.to(self.device).contiguous(memory_format=torch.channels_last)
            outputs = forward_images(self.model, images, flip=test.flip)
            return postprocess(outputs, meta.to(self.device), self.model.stride, hp.max_detections, hp.nms_iou)

        detections = detect_passes(run, batch["images"], batch["meta"], test, hp.input_size, hp.max_detections)
        self.evaluator.update(batch["image_ids"], detections, image_sizes=batch["meta"][:, 2:4])

    def _log_prediction_grid(self, batch: dict, outputs: dict[str, torch.Tensor]) -> None:
        """A grid of the first validation images with their detections, to the logger (so one sees it learn)."""
        experiment = getattr(self.logger, "experiment", None)
        if self.trainer.sanity_checking or not self.trainer.is_global_zero or not hasattr(experiment, "add_image"):
            return
        count = min(8, batch["images"].shape[0])
        images = list(batch["images"][:count].permute(0, 2, 3, 1).cpu().numpy())
        detections = decode({k: v[:count] for k, v in outputs.items()}, self.hparams.max_detections, self.model.stride)
        per_image = [{k: v[i] for k, v in detections.items()} for i in range(count)]  # boxes in input pixels
        grid = prediction_grid(images, per_image, self.class_names)
        experiment.add_image("val/predictions", grid, self.current_epoch, dataformats="HWC")

    def on_validation_epoch_end(self) -> None:
        if self.trainer.sanity_checking:
            return
        self.evaluator.synchronize()
        self.last_result = result = self.evaluator.compute()
        rank_zero_info(f"epoch {self.current_epoch} validation: " + "  ".join(
            f"{name} {100 * result.metrics[name]:.2f}" for name in ("AP", "AP50", "AP75")))
        for name, value in result.metrics.items():
            self.log(f"val/{name}", value, prog_bar=name in ("AP", "AP50"), rank_zero_only=False)

    def take_train_losses(self) -> dict[str, float]:
        """The mean training losses (``plots.TRAIN_LOSSES``) since the previous call, over every rank (a collective
        under DDP: every rank calls it); empty when no step ran."""
        sums = torch.zeros(len(TRAIN_LOSSES) + 1, device=self.device) if self._loss_sums is None else self._loss_sums
        sums, self._loss_sums = self.trainer.strategy.reduce(sums, reduce_op="sum").cpu(), None
        return dict(zip(TRAIN_LOSSES, (sums[:-1] / sums[-1]).tolist())) if sums[-1] > 0 else {}

    def eval_description(self) -> str:
        eval_size = getattr(self.trainer.datamodule, "eval_size", self.hparams.input_size)
        resolution = f"letterbox {eval_size}" if eval_size else "original resolution padded to 32"
        test = self.passes
        scales = "" if test is None or tuple(test.scales) == (1.0,) else \
            ", test scales " + " ".join(f"{s:g}" for s in test.scales)
        tiles = "" if test is None or test.tile is None else \
            f", tiles of {test.tile} px overlapping {test.overlap:g}{' + the whole photo' if test.whole else ''}"
        return f"evaluated at {resolution}{', flip test' if self.hparams.flip_test else ''}{scales}{tiles}"

    # optimisation -----------------------------------------------------------------------------------------------

    def effective_lr(self) -> float:
        opt = self.optim
        if not opt.lr_batch_size:
            return opt.lr
        trainer = self.trainer
        if trainer.train_dataloader is None:
            trainer.fit_loop.setup_data()
        total = trainer.train_dataloader.batch_size * trainer.world_size * trainer.accumulate_grad_batches
        return opt.lr * total / opt.lr_batch_size

    def configure_optimizers(self):
        opt = self.optim
        lr = self.effective_lr()
        optimizer = torch.optim.Adam(self.parameters(), lr=lr, weight_decay=opt.weight_decay)
        steps_per_epoch, total_steps = training_steps(self.trainer)
        check_schedule(opt.schedule, opt.milestones, steps_per_epoch, total_steps)
        rank_zero_info(f"learning rate {lr:.3g} (lr {opt.lr:g} for a batch of {opt.lr_batch_size or 'any size'}), "
                       f"{opt.schedule} schedule over {total_steps} steps of {steps_per_epoch} per epoch")
        scale = lr_factor(opt.schedule, opt.milestones, opt.gamma, opt.warmup_epochs, steps_per_epoch, total_steps)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, scale)
        self._asked_schedule = replace(scale)  # a resume restores the run's own into ``scale``: on_train_start
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def on_train_start(self) -> None:
        """A resumed run keeps the schedule it started with (restored from the checkpoint, ``LrFactor``): one line
        when this command's settings (e.g. a larger ``--trainer.max_epochs``) would have given another."""
        kept, asked = self.lr_schedulers().lr_lambdas[0], self._asked_schedule
        if kept == asked:
            return
        zero = kept.schedule == "cosine" and asked.total_steps > kept.total_steps
        rank_zero_info(
            f"resumed runs keep their learning-rate schedule: {kept.describe()} (this command's settings would give "
            f"{asked.describe()}){f'; the learning rate is 0 from step {kept.total_steps:g} on' if zero else ''}. "
            "For a new schedule, fine-tune from the checkpoint: --model.init_from <checkpoint> instead of --ckpt_path")

    # checkpoints ------------------------------------------------------------------------------------------------

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint[CHECKPOINT_KEY] = self.description().to_dict()

    def description(self) -> ModelDescription:
        """What rebuilds the network without any config (``detector.checkpoint.ModelDescription``)."""
        hp = self.hparams
        return ModelDescription(num_classes=hp.num_classes, class_names=self.class_names,
                                category_ids=self.category_ids, input_size=hp.input_size, neck=hp.neck,
                                head_channels=hp.head_channels, stride=self.model.stride)
