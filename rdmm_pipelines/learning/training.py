"""Training a registration network on pairs, unsupervised; validation each epoch; resumable.

Outputs in ``out_dir`` (each written atomically, after every epoch):

* ``last.pt``: the latest checkpoint (weights, optimiser and scheduler state, history);
* ``best.pt``: the checkpoint with the lowest validation loss (training loss without validation);
* ``training.json``: both configurations, versions, device, seed, pairs, and the history;
* ``history.csv`` and ``curves.png``: loss and validation Dice per epoch.

``train(..., resume=True)`` continues from ``last.pt`` (same network configuration required;
the training configuration may raise ``epochs``); without it an existing ``last.pt`` is refused,
so nothing is overwritten by accident.

Each epoch draws its pairs (:func:`epoch_order`), its learning rate (:func:`learning_rate_at`)
and its augmentation from the seed and the epoch number alone, so a resumed training sees what an
uninterrupted one would have seen. Training batches are augmented
(:func:`~rdmm_pipelines.learning.augment.augment_pairs`, ``TrainingConfig.augment_*``) before the
reversed pairs of an inverse-consistent network are appended; validation never is.
"""

from __future__ import annotations

import csv
import io
import logging
import math
import os
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..atomic import write_text_atomic
from ..integrators import ShootingError
from ..provenance import device_description, resolve_device, versions, write_json_atomic
from .checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from .augment import augment_pairs
from .config import COSINE_FLOOR, NetworkConfig, TrainingConfig
from .curves import plot_curves
from .data import NetworkPair, collate
from .loss import RegistrationLoss
from .network import RegistrationNetwork
from .scores import map_dice, map_folds

__all__ = ["TRAINING_FILES", "TrainingResult", "epoch_order", "learning_rate_at", "split_pairs", "train", "validate"]

log = logging.getLogger(__name__)

TRAINING_FILES = {"last": "last.pt", "best": "best.pt", "record": "training.json",
                  "history": "history.csv", "curves": "curves.png"}


@dataclass
class TrainingResult:
    """What :func:`train` leaves: the trained network (best weights loaded) and where it is."""

    network: RegistrationNetwork
    out_dir: Path
    history: list[dict[str, Any]] = field(default_factory=list)
    best_epoch: int = 0

    @property
    def checkpoint(self) -> Path:
        return self.out_dir / TRAINING_FILES["best"]


def split_pairs(pairs: Sequence[NetworkPair], fraction: float, seed: int) -> tuple[list[NetworkPair], list[NetworkPair]]:
    """(training, validation): a seeded shuffle; ``round(fraction * n)`` (at least 1 when fraction > 0
    and n > 1) pairs for validation."""
    order = list(range(len(pairs)))
    random.Random(seed).shuffle(order)
    n_val = 0 if fraction <= 0 or len(pairs) < 2 else max(1, round(fraction * len(pairs)))
    val = sorted(order[:n_val])
    return [pairs[i] for i in order[n_val:]], [pairs[i] for i in val]


def learning_rate_at(cfg: TrainingConfig, epoch: int) -> float:
    """The learning rate of (0-based) ``epoch`` under ``cfg.schedule`` (see :class:`TrainingConfig`)."""
    if cfg.schedule == "step":
        return cfg.learning_rate * cfg.lr_decay ** (epoch // cfg.lr_step)
    w = cfg.warmup_epochs
    if epoch < w:
        return cfg.learning_rate * (epoch + 1) / (w + 1)
    progress = min(1.0, (epoch - w) / max(cfg.epochs - w - 1, 1))
    return cfg.learning_rate * (COSINE_FLOOR + (1 - COSINE_FLOOR) * 0.5 * (1 + math.cos(math.pi * progress)))


def _shuffled(n: int, seed: int, k: int) -> list[int]:
    order = list(range(n))
    random.Random(seed * 100003 + k).shuffle(order)
    return order


def epoch_order(n_pairs: int, cfg: TrainingConfig, epoch: int) -> list[int]:
    """Indices into the ``n_pairs`` training pairs for (0-based) ``epoch``, in training order.

    ``cfg.pairs_per_epoch`` = 0: a seeded shuffle of all pairs. N > 0: positions ``epoch N`` ..
    ``(epoch + 1) N - 1`` of the endless sequence of seeded shuffles of the pool (shuffle k for pass
    k over it), so every pair comes once before any comes twice.
    """
    n_per = cfg.pairs_per_epoch
    if n_per == 0 or n_pairs == 0:
        return _shuffled(n_pairs, cfg.seed, epoch)
    start = epoch * n_per
    order: list[int] = []
    k = start // n_pairs
    offset = start - k * n_pairs
    while len(order) < n_per:
        order += _shuffled(n_pairs, cfg.seed, k)[offset:offset + n_per - len(order)]
        k, offset = k + 1, 0
    return order


def _scheduler(optimizer: torch.optim.Optimizer, cfg: TrainingConfig):
    if cfg.schedule == "step":
        return torch.optim.lr_scheduler.StepLR(optimizer, step_size=cfg.lr_step, gamma=cfg.lr_decay)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda e: learning_rate_at(cfg, e) / cfg.learning_rate)


def _restore(optimizer: torch.optim.Optimizer, scheduler, ckpt, cfg: TrainingConfig, first: int) -> None:
    """Load the optimiser's and the scheduler's state of ``ckpt``; a schedule other than the
    checkpoint's starts at epoch ``first`` of its own course."""
    if ckpt.record.get("optimizer"):
        optimizer.load_state_dict(ckpt.record["optimizer"])
    before = ckpt.training.schedule if ckpt.training is not None else "step"
    if ckpt.record.get("scheduler") and before == cfg.schedule:
        scheduler.load_state_dict(ckpt.record["scheduler"])
        if cfg.schedule == "step":
            return
    elif before != cfg.schedule:
        log.warning("resuming with the %s schedule a training begun with the %s schedule", cfg.schedule, before)
    scheduler.last_epoch = first
    for group in optimizer.param_groups:
        group["lr"] = learning_rate_at(cfg, first)


def _batch(net: RegistrationNetwork, pairs: Sequence[NetworkPair], device: torch.device,
           augment: tuple[TrainingConfig, torch.Generator] | None = None) -> tuple:
    source, target, spacing = collate(pairs, device)
    if augment is not None:
        cfg, generator = augment
        if cfg.augment_affine or cfg.augment_intensity:
            source, target = augment_pairs(source, target, spacing, generator, cfg.augment_affine,
                                           cfg.augment_intensity)
    bidirectional = net.cfg.inverse_consistency_weight > 0
    if bidirectional:
        source, target = torch.cat([source, target]), torch.cat([target, source])
    return source, target, spacing, bidirectional


@torch.no_grad()
def validate(net: RegistrationNetwork, loss: RegistrationLoss, pairs: Sequence[NetworkPair], epoch: float,
             device: torch.device | str = "cpu") -> dict[str, float]:
    """Mean loss, Dice (pairs with labels) and folding voxels of ``net`` over ``pairs``."""
    was_training = net.training
    net.eval()
    losses, dice, folds = [], [], []
    for pair in pairs:
        source, target, spacing, bidirectional = _batch(net, [pair], torch.device(device))
        try:
            pred = net(source, target, spacing)
        except ShootingError as err:  # counted as a non-finite loss, like a diverged training batch
            log.warning("validation pair %s: %s", pair.name, err)
            losses.append(math.nan)
            continue
        losses.append(float(loss(net, pred, target, spacing, epoch, bidirectional)["total"]))
        full = pred.full_map[:1]
        folds.append(map_folds(full, spacing)["folding_voxels"])
        if pair.source_labels is not None and pair.target_labels is not None:
            dice.append(map_dice(pair.source_labels, pair.target_labels, full, spacing))
    net.train(was_training)
    mean = (lambda xs: sum(xs) / len(xs) if xs else math.nan)
    return {"val_loss": mean(losses), "val_dice": mean(dice), "val_folding_voxels": mean(folds)}


def _progress_bar(total: int, desc: str, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="batch", disable=not enabled, leave=False, dynamic_ncols=True)


def _history_csv(history: list[dict[str, Any]]) -> str:
    buf = io.StringIO()
    if history:
        writer = csv.DictWriter(buf, fieldnames=list(history[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(history)
    return buf.getvalue()


def _start(out: Path, net_cfg: NetworkConfig, train_cfg: TrainingConfig, resume: bool, device: torch.device):
    last = out / TRAINING_FILES["last"]
    if not last.exists():
        if resume:
            log.warning("%s: nothing to resume, starting a new training", out)
        return None
    if not resume:
        raise FileExistsError(
            f"{out} already holds a training ({last.name}); resume it (resume=True, --resume) or choose another folder")
    ckpt = load_checkpoint(last, device=device)
    if ckpt.network.cfg != net_cfg:
        raise CheckpointError(
            f"{last}: cannot resume: the checkpoint's network configuration differs from the one given "
            "(resume with the same network settings)")
    if ckpt.epoch >= train_cfg.epochs:
        log.info("%s: already trained for %d epochs (asked for %d)", out, ckpt.epoch, train_cfg.epochs)
    return ckpt


def train(
    net_cfg: NetworkConfig,
    train_cfg: TrainingConfig,
    pairs: Sequence[NetworkPair],
    out_dir: str | os.PathLike,
    *,
    validation: Sequence[NetworkPair] | None = None,
    resume: bool = False,
    device: str | torch.device = "auto",
    progress: bool = True,
    on_epoch: Callable[[dict[str, Any]], None] | None = None,
) -> TrainingResult:
    """Train a network of ``net_cfg`` on ``pairs`` (Adam; step-decayed or cosine learning rate;
    optionally augmented batches and a fixed number of pairs per epoch: :class:`TrainingConfig`).

    Args:
        pairs: training pairs (:class:`NetworkPair`, e.g. from :func:`load_pair`); when
            ``validation`` is None, ``train_cfg.validation_fraction`` of them are held out.
        out_dir: where checkpoints, the record and the curves go (see the module docstring).
        resume: continue from ``out_dir/last.pt``.
        device: "auto", "cpu", "cuda", "cuda:N".
        progress: show a progress bar per epoch.
        on_epoch: called with each epoch's history row.

    Returns:
        A :class:`TrainingResult` whose network holds the best weights.
    """
    out = Path(out_dir)
    if not pairs:
        raise ValueError("no training pairs")
    for p in pairs:
        if tuple(p.source.shape[1:]) != net_cfg.image_shape or p.source.shape[0] != net_cfg.channels:
            raise ValueError(f"pair {p.name!r} of shape {tuple(p.source.shape)} does not fit the network's input "
                             f"({net_cfg.channels}, {', '.join(map(str, net_cfg.image_shape))})")
    dev = resolve_device(device)
    if train_cfg.threads:
        torch.set_num_threads(train_cfg.threads)
    if validation is None:
        train_pairs, val_pairs = split_pairs(pairs, train_cfg.validation_fraction, train_cfg.seed)
    else:
        train_pairs, val_pairs = list(pairs), list(validation)
    out.mkdir(parents=True, exist_ok=True)
    ckpt = _start(out, net_cfg, train_cfg, resume, dev)
    torch.manual_seed(train_cfg.seed)
    net = ckpt.network.train() if ckpt is not None else RegistrationNetwork(net_cfg).to(dev)
    net.train()
    optimizer = torch.optim.Adam(net.parameters(), lr=train_cfg.learning_rate)
    scheduler = _scheduler(optimizer, train_cfg)
    history: list[dict[str, Any]] = []
    first = 0
    if ckpt is not None:
        history, first = list(ckpt.history), ckpt.epoch
        _restore(optimizer, scheduler, ckpt, train_cfg, first)
        log.info("resuming %s at epoch %d", out, first)
    loss_fn = RegistrationLoss(net)
    best = min((h["selection_loss"] for h in history), default=math.inf)
    record_base = {
        "rdmm_pipelines_training": 1, "network": net_cfg.to_dict(), "training": train_cfg.to_dict(),
        "versions": versions(), "device": device_description(dev), "seed": train_cfg.seed,
        "training_pairs": [p.name for p in train_pairs], "validation_pairs": [p.name for p in val_pairs],
    }
    bs = train_cfg.batch_size
    for epoch in range(first, train_cfg.epochs):
        t0 = time.perf_counter()
        if train_cfg.schedule == "cosine":  # the closed form: right after a resume with more epochs too
            for group in optimizer.param_groups:
                group["lr"] = learning_rate_at(train_cfg, epoch)
        order = epoch_order(len(train_pairs), train_cfg, epoch)
        augment = (train_cfg, torch.Generator().manual_seed(train_cfg.seed * 1000003 + epoch))
        batches = [[train_pairs[i] for i in order[k:k + bs]] for k in range(0, len(order), bs)]
        sums: dict[str, float] = {}
        skipped: list[str] = []
        bar = _progress_bar(len(batches), f"epoch {epoch + 1}/{train_cfg.epochs}", progress)
        for batch in batches:
            source, target, spacing, bidirectional = _batch(net, batch, dev, augment)
            try:
                pred = net(source, target, spacing)
                terms = loss_fn(net, pred, target, spacing, epoch, bidirectional)
            except ShootingError as err:  # a momentum the time steps cannot follow: like a non-finite loss
                log.warning("epoch %d: %s", epoch + 1, err)
                terms = {"total": torch.tensor(math.nan)}
            if not torch.isfinite(terms["total"]):  # skip the batch; give up when it keeps happening
                skipped.append(", ".join(p.name for p in batch))
                log.warning("epoch %d: non-finite loss on %s; batch skipped", epoch + 1, skipped[-1])
                if len(skipped) > max(2, len(batches) // 10):
                    raise FloatingPointError(
                        f"epoch {epoch + 1}: the loss was non-finite, or the shot could not be integrated (see the "
                        f"warnings), on {len(skipped)} batches (last: {skipped[-1]}); lower the learning rate (now "
                        f"{optimizer.param_groups[0]['lr']:g}) or raise integrator.max_steps; "
                        f"{out / TRAINING_FILES['last']} holds the last complete epoch")
                bar.update()
                continue
            optimizer.zero_grad()
            terms["total"].backward()
            if train_cfg.clip_gradient > 0:
                torch.nn.utils.clip_grad_norm_(net.parameters(), train_cfg.clip_gradient)
            optimizer.step()
            for k, v in terms.items():
                sums[k] = sums.get(k, 0.0) + float(v.detach())
            bar.set_postfix(loss=f"{float(terms['total'].detach()):.4f}")
            bar.update()
        bar.close()
        lr = optimizer.param_groups[0]["lr"]
        scheduler.step()
        row: dict[str, Any] = {"epoch": epoch + 1, "lr": lr}
        row.update({f"train_{k}": v / max(len(batches) - len(skipped), 1) for k, v in sums.items()})
        row["skipped_batches"] = len(skipped)
        if val_pairs:
            row.update(validate(net, loss_fn, val_pairs, epoch, dev))
        row["selection_loss"] = row.get("val_loss", row["train_total"])
        row["seconds"] = time.perf_counter() - t0
        history.append(row)
        save_checkpoint(out / TRAINING_FILES["last"], net, epoch=epoch + 1, training=train_cfg, history=history,
                        optimizer=optimizer, scheduler=scheduler, device=device_description(dev))
        if row["selection_loss"] < best:
            best = row["selection_loss"]
            save_checkpoint(out / TRAINING_FILES["best"], net, epoch=epoch + 1, training=train_cfg,
                            history=history, device=device_description(dev))
        write_text_atomic(out / TRAINING_FILES["history"], _history_csv(history))
        write_json_atomic(out / TRAINING_FILES["record"], {**record_base, "history": history})
        plot_curves(history, out / TRAINING_FILES["curves"])
        log.info("epoch %d: %s", epoch + 1, ", ".join(f"{k} {v:.4g}" for k, v in row.items() if isinstance(v, float)))
        if on_epoch is not None:
            on_epoch(row)
    best_path = out / TRAINING_FILES["best"]
    if not best_path.exists():  # e.g. resumed a finished training whose best file was removed
        save_checkpoint(best_path, net, epoch=len(history), training=train_cfg, history=history,
                        device=device_description(dev))
    final = load_checkpoint(best_path, device=dev)
    return TrainingResult(network=final.network, out_dir=out, history=history, best_epoch=final.epoch)
