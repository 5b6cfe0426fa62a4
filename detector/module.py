"""The LightningModule: orchestrates the plain ``CenterNet`` network, its loss, the optimiser and the metric."""
from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import Literal

import pytorch_lightning as pl
import torch
from pytorch_lightning.utilities import rank_zero_info, rank_zero_warn

from detector.checkpoint import CHECKPOINT_KEY, ModelDescription, load_checkpoint, model_state
from detector.decode import decode
from detector.evaluation import EvalResult, Evaluator
from detector.inference import forward_images, postprocess
from detector.losses import CenterNetLoss
from detector.model import CenterNet
from detector.model.centernet import NeckName
from detector.targets import encode, ignore_regions
from detector.visualize import prediction_grid


class CenterNetModule(pl.LightningModule):
    """Trains and validates a ``CenterNet``.

    Args:
        num_classes: number of classes (linked from the data module by ``tools/train.py``).
        class_names: class names in label order (linked from the data module).
        category_ids: the dataset's category id of each label, for COCO results files (linked from the data module).
        input_size: square training input size in pixels (linked from the data module).
        neck: ``lean`` (the fast default) or ``deconv`` (the paper's network).
        weights: backbone weights: ``imagenet`` (download), null (random init) or a local ``.pth`` path.
        head_channels: hidden width of each head.
        lr: Adam learning rate for a total batch of ``lr_batch_size`` images.
        lr_batch_size: the total batch ``lr`` was tuned for; the learning rate used is
            ``lr * (batch_size * devices * num_nodes * accumulate_grad_batches) / lr_batch_size`` (linear scaling).
            Null: use ``lr`` as given.
        weight_decay: Adam weight decay.
        schedule: ``step`` (x ``gamma`` at each epoch of ``milestones``) or ``cosine`` (to 0 at the last epoch).
        milestones: epochs of the step schedule's drops (default 90, 120: the paper's COCO recipe).
        gamma: the step schedule's factor.
        warmup_epochs: linear warmup from 1/10 of the learning rate, in epochs (fractions allowed); 0 disables it.
        max_detections: detections kept per image (top-K of decoding).
        flip_test: average the heatmaps of each validation image and its mirror.
        nms_iou: class-wise NMS at this IoU after decoding (null: off, the paper's default; peaks are the NMS).
        ignore_crowd: COCO ``iscrowd`` regions are neither positives nor negatives of the heatmap loss.
        legacy_radius: the widely copied Gaussian radius (divides by 2 instead of 2a), for ablations only.
        init_from: fine-tune from this checkpoint of the detector, possibly trained on other classes: every weight
            is kept except the class heatmap head, which starts afresh.
        nonfinite_limit: a step whose loss is NaN or infinite is skipped (zero gradient) with a warning and
            counted; after this many such steps in a row training stops with an error.
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
        lr: float = 5e-4,
        lr_batch_size: int | None = None,
        weight_decay: float = 0.0,
        schedule: Literal["step", "cosine"] = "step",
        milestones: list[int] | None = None,
        gamma: float = 0.1,
        warmup_epochs: float = 0.0,
        max_detections: int = 100,
        flip_test: bool = False,
        nms_iou: float | None = None,
        ignore_crowd: bool = True,
        legacy_radius: bool = False,
        init_from: str | None = None,
        nonfinite_limit: int = 20,
    ):
        super().__init__()
        milestones = [90, 120] if milestones is None else list(milestones)
        self.save_hyperparameters()
        self.model = CenterNet(num_classes, neck=neck, weights=weights, head_channels=head_channels)
        if init_from:
            self._init_from(init_from)
        self.criterion = CenterNetLoss()
        self.class_names = list(class_names) if class_names else [str(i) for i in range(num_classes)]
        self.category_ids = list(category_ids) if category_ids else list(range(num_classes))
        self.nonfinite_steps = 0  # skipped steps in this run
        self._nonfinite_streak = 0
        self.results_path: str | None = None  # set by detector.api.evaluate to write the detections json
        self.last_result: EvalResult | None = None
        self.evaluator: Evaluator | None = None

    def _init_from(self, path: str) -> None:
        own = self.model.state_dict()
        kept = {k: v for k, v in model_state(load_checkpoint(path)).items()
                if not k.startswith("head.heatmap.") and k in own and own[k].shape == v.shape}
        self.model.load_state_dict(kept, strict=False)
        rank_zero_info(f"initialised {len(kept)} of {len(own)} tensors from {path} (class heatmap head is new)")

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.model(images)

    # training ---------------------------------------------------------------------------------------------------

    def _targets(self, batch: dict, output_size: tuple[int, int]) -> dict[str, torch.Tensor]:
        hp = self.hparams
        targets = encode(batch["boxes"], batch["labels"], batch["mask"], hp.num_classes, output_size,
                         self.model.stride, legacy_radius=hp.legacy_radius)
        if hp.ignore_crowd and "crowd_boxes" in batch and batch["crowd_boxes"].shape[1]:
            regions = ignore_regions(batch["crowd_boxes"], batch["crowd_mask"], output_size, self.model.stride)
            targets["ignore"] = regions & targets["heatmap"].lt(1)
        return targets

    def _loss(self, batch: dict, outputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return self.criterion(outputs, self._targets(batch, tuple(outputs["heatmap"].shape[-2:])))

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        parts = self._loss(batch, forward_images(self.model, batch["images"]))
        batch_size = batch["images"].shape[0]
        if not torch.isfinite(parts["loss"]):
            return self._skip_nonfinite(parts, batch)
        self._nonfinite_streak = 0
        self.log("train/loss", parts["loss"], prog_bar=True, batch_size=batch_size, on_epoch=True)
        for name in ("heatmap", "offset", "size"):
            self.log(f"train/{name}", parts[name], batch_size=batch_size)
        return parts["loss"]

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
        datamodule = self.trainer.datamodule
        self.evaluator = Evaluator(datamodule.val_coco, self.category_ids, voc07=datamodule.hparams.dataset == "voc",
                                   results_path=self.results_path, setting=self.eval_description())

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        hp = self.hparams
        outputs = forward_images(self.model, batch["images"], flip=hp.flip_test)
        if not hp.flip_test:  # the loss needs the plain outputs
            self.log("val/loss", self._loss(batch, outputs)["loss"], batch_size=batch["images"].shape[0],
                     sync_dist=True)
        if batch_idx == 0:
            self._log_prediction_grid(batch, outputs)
        self.evaluator.update(batch["image_ids"],
                              postprocess(outputs, batch["meta"], self.model.stride, hp.max_detections, hp.nms_iou))

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
        log_dir = self.trainer.log_dir if self.trainer.logger else None  # a collective under DDP: every rank asks
        self.evaluator.synchronize()
        self.last_result = result = self.evaluator.compute()
        if log_dir and self.trainer.is_global_zero:
            Path(log_dir).mkdir(parents=True, exist_ok=True)
            (Path(log_dir) / "val_per_class_ap.txt").write_text(result.table(f"epoch {self.current_epoch}") + "\n")
        rank_zero_info(f"epoch {self.current_epoch} validation: " + "  ".join(
            f"{name} {100 * result.metrics[name]:.2f}" for name in ("AP", "AP50", "AP75")))
        for name, value in result.metrics.items():
            self.log(f"val/{name}", value, prog_bar=name in ("AP", "AP50"), rank_zero_only=False)

    def eval_description(self) -> str:
        eval_size = getattr(self.trainer.datamodule, "eval_size", self.hparams.input_size)
        resolution = f"letterbox {eval_size}" if eval_size else "original resolution padded to 32"
        return f"evaluated at {resolution}{', flip test' if self.hparams.flip_test else ''}"

    # optimisation -----------------------------------------------------------------------------------------------

    def effective_lr(self) -> float:
        hp = self.hparams
        if not hp.lr_batch_size:
            return hp.lr
        trainer = self.trainer
        total = trainer.datamodule.hparams.batch_size * trainer.world_size * trainer.accumulate_grad_batches
        return hp.lr * total / hp.lr_batch_size

    def configure_optimizers(self):
        hp = self.hparams
        lr = self.effective_lr()
        rank_zero_info(f"learning rate {lr:.3g} (lr {hp.lr:g} for a batch of {hp.lr_batch_size or 'any size'})")
        optimizer = torch.optim.Adam(self.parameters(), lr=lr, weight_decay=hp.weight_decay)
        steps_per_epoch = max(1.0, self.trainer.estimated_stepping_batches / max(1, self.trainer.max_epochs or 1))
        scale = lr_factor(hp.schedule, hp.milestones, hp.gamma, hp.warmup_epochs, steps_per_epoch,
                          self.trainer.estimated_stepping_batches)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, scale)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    # checkpoints ------------------------------------------------------------------------------------------------

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint[CHECKPOINT_KEY] = self.description().to_dict()

    def description(self) -> ModelDescription:
        """What rebuilds the network without any config (``detector.checkpoint.ModelDescription``)."""
        hp = self.hparams
        return ModelDescription(num_classes=hp.num_classes, class_names=self.class_names,
                                category_ids=self.category_ids, input_size=hp.input_size, neck=hp.neck,
                                head_channels=hp.head_channels, stride=self.model.stride)


def lr_factor(schedule: str, milestones: list[int], gamma: float, warmup_epochs: float, steps_per_epoch: float,
              total_steps: float):
    """The multiplier of the base learning rate at each optimiser step (a plain function: checkpoints stay plain)."""
    warmup_steps = warmup_epochs * steps_per_epoch

    def factor(step: int) -> float:
        warm = 0.1 + 0.9 * step / warmup_steps if step < warmup_steps else 1.0
        epoch = step / steps_per_epoch
        if schedule == "step":
            return warm * gamma ** sum(epoch >= m for m in milestones)
        progress = min(1.0, max(0.0, (step - warmup_steps) / max(1.0, total_steps - warmup_steps)))
        return warm * 0.5 * (1 + math.cos(math.pi * progress))

    return factor
