"""The learning-rate schedule: the formula, refused schedules, and the rate a real run logs at every step."""
import math
from pathlib import Path
from types import SimpleNamespace

import pytest

from detector.cli import train_main
from detector.training.schedule import check_schedule, lr_factor, scaled_milestones, training_steps

ROOT = Path(__file__).resolve().parent.parent


def reference(step, schedule, milestones, gamma, warmup_steps, per_epoch, total):
    """The schedule written out plainly: warmup 0.1 -> 1, then the drops (or the cosine)."""
    warm = min(1.0, 0.1 + 0.9 * step / warmup_steps) if warmup_steps else 1.0
    if schedule == "step":
        drops = len([m for m in milestones if step // per_epoch >= m])
        return warm * gamma ** drops
    if step < warmup_steps:
        return warm
    return 0.5 * (1 + math.cos(math.pi * (step - warmup_steps) / (total - warmup_steps)))


@pytest.mark.parametrize("schedule,warmup_epochs", [("step", 0.0), ("step", 1.5), ("cosine", 0.0), ("cosine", 0.5)])
def test_lr_factor_equals_the_plain_formula(schedule, warmup_epochs):
    per_epoch, total = 7, 70
    factor = lr_factor(schedule, [4, 8], 0.1, warmup_epochs, per_epoch, total)
    for step in range(total):
        expected = reference(step, schedule, [4, 8], 0.1, warmup_epochs * per_epoch, per_epoch, total)
        assert factor(step) == pytest.approx(expected, rel=1e-9, abs=1e-12), step


def test_step_drops_land_on_the_first_step_of_the_milestone_epoch():
    factor = lr_factor("step", [2, 3], 0.1, 0.0, 63, 219)
    assert factor(125) == 1.0 and factor(126) == pytest.approx(0.1)
    assert factor(188) == pytest.approx(0.1) and factor(189) == pytest.approx(0.01)


def test_unreachable_milestones_are_an_error_that_suggests_reachable_ones():
    with pytest.raises(ValueError, match=r"model.optim.milestones \[90, 120\].*30 epochs.*\[90, 120\] would never"):
        check_schedule("step", [90, 120], 100, 3000)
    check_schedule("step", [2, 3], 63, 219)  # 3.5 epochs: both drops happen
    with pytest.raises(ValueError, match=r"drops at epochs \[4\]"):
        check_schedule("step", [2, 4], 63, 219)
    assert scaled_milestones([90, 120], 30) == [19, 26]
    assert scaled_milestones([45, 60], 70) == [45, 60]


def fake_trainer(max_epochs, max_steps, batches=10, accumulate=1):
    """What ``training_steps`` reads of a trainer; ``estimated_stepping_batches`` as Lightning computes it."""
    per_epoch = math.ceil(batches / accumulate)
    estimated = per_epoch * max(max_epochs, 1) if max_epochs >= 0 else math.inf
    estimated = min(estimated, max_steps) if max_steps >= 0 else estimated
    return SimpleNamespace(train_dataloader=object(), num_training_batches=batches, accumulate_grad_batches=accumulate,
                           max_epochs=max_epochs, max_steps=max_steps, estimated_stepping_batches=estimated)


@pytest.mark.parametrize("max_epochs,max_steps,accumulate,expected", [
    (24, -1, 1, (10, 240)),
    (24, 6, 1, (10, 240)),  # max_steps stops this command early: the schedule still spans the 24 epochs
    (-1, 50, 1, (10, 50)),  # no epoch bound: max_steps is the run's length
    (-1, -1, 1, (10, math.inf)),
    (3, -1, 3, (4, 12)),  # 10 batches, 3 per optimiser step: 4 steps an epoch
])
def test_the_schedule_spans_max_epochs_and_max_steps_only_stops_the_command(max_epochs, max_steps, accumulate,
                                                                           expected):
    assert training_steps(fake_trainer(max_epochs, max_steps, accumulate=accumulate)) == expected


def test_cosine_needs_a_bounded_run():
    with pytest.raises(ValueError, match="needs a bounded run"):
        check_schedule("cosine", [90, 120], 10, math.inf)
    check_schedule("step", [90, 120], 10, math.inf)  # an unbounded step schedule is fine


def logged_rates(run_dir: Path) -> dict[int, float]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    events.Reload()
    tag = next(t for t in events.Tags()["scalars"] if t.startswith("lr-"))
    return {e.step: e.value for e in events.Scalars(tag)}


def run_schedule(tmp_path, *bounds):
    args = ["--data.dataset", "synthetic",
            "--data.root", str(tmp_path / "synthetic"), "--data.num_train", "20", "--data.num_val", "2",
            "--data.input_size", "64", "--data.batch_size", "4", "--data.num_workers", "0",
            "--trainer.logger.init_args.save_dir", str(tmp_path / "runs"),
            "--trainer.default_root_dir", str(tmp_path / "runs"), "--trainer.enable_progress_bar", "false",
            "--trainer.enable_model_summary", "false", "--trainer.accelerator", "cpu",
            "--trainer.log_every_n_steps", "1", "--trainer.num_sanity_val_steps", "0",
            "--trainer.check_val_every_n_epoch", "100", "--model.optim.lr", "0.001", *bounds]
    cli = train_main(args)
    return cli, logged_rates(Path(cli.trainer.log_dir))


@pytest.mark.slow
@pytest.mark.parametrize("bounds,per_epoch,total", [
    # 20 images, batch 4: 5 batches an epoch
    (["--trainer.max_epochs", "4", "--model.optim.schedule", "step", "--model.optim.milestones", "[2, 3]"], 5, 20),
    # bounded by steps although max_epochs is large: the case that used to decay at step 0
    (["--trainer.max_steps", "13", "--trainer.max_epochs", "100", "--model.optim.schedule", "step",
      "--model.optim.milestones", "[1, 2]"], 5, 13),
    (["--trainer.max_steps", "12", "--trainer.max_epochs", "-1", "--model.optim.schedule", "cosine",
      "--model.optim.warmup_epochs", "0.6"], 5, 12),
    # gradient accumulation: 5 batches are 3 optimiser steps an epoch
    (["--trainer.max_epochs", "3", "--trainer.accumulate_grad_batches", "2", "--model.optim.schedule", "cosine",
      "--model.optim.warmup_epochs", "1"], 3, 9),
])
def test_the_logged_learning_rate_follows_the_formula_at_every_step(tmp_path, bounds, per_epoch, total):
    cli, rates = run_schedule(tmp_path, *bounds)
    opt = cli.model.optim
    assert cli.trainer.global_step == total
    assert sorted(rates) == list(range(total)), sorted(rates)
    for step, rate in rates.items():
        expected = 1e-3 * reference(step, opt.schedule, opt.milestones, opt.gamma, opt.warmup_epochs * per_epoch,
                                    per_epoch, total)
        assert rate == pytest.approx(expected, rel=1e-5), (step, rates)


@pytest.mark.slow
def test_a_run_too_short_for_its_milestones_stops_with_the_reason(tmp_path):
    with pytest.raises(ValueError, match=r"milestones \[90, 120\]"):
        run_schedule(tmp_path, "--trainer.max_epochs", "2", "--model.optim.schedule", "step")
