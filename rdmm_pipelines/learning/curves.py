"""The training curves: loss (training and validation) and validation Dice per epoch, as a PNG."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..atomic import atomic_output

__all__ = ["plot_curves"]


def plot_curves(history: Sequence[dict[str, Any]], path: str | os.PathLike) -> Path:
    """Draw loss and Dice against the epoch into ``path`` (PNG, written atomically)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    epochs = [h["epoch"] for h in history]
    fig, (ax_loss, ax_dice) = plt.subplots(1, 2, figsize=(9, 3.5))
    ax_loss.plot(epochs, [h["train_total"] for h in history], "o-", label="training")
    if any("val_loss" in h for h in history):
        ax_loss.plot(epochs, [h.get("val_loss", math.nan) for h in history], "s-", label="validation")
    ax_loss.set(xlabel="epoch", ylabel="loss", title="loss")
    ax_loss.legend()
    dice = [h.get("val_dice", math.nan) for h in history]
    if any(math.isfinite(x) for x in dice):
        ax_dice.plot(epochs, dice, "s-", color="tab:green")
        ax_dice.set(xlabel="epoch", ylabel="mean Dice", title="validation Dice")
    else:
        ax_dice.text(0.5, 0.5, "no validation labels", ha="center", va="center", transform=ax_dice.transAxes)
        ax_dice.set_axis_off()
    fig.tight_layout()
    dest = Path(path)
    with atomic_output(dest, suffix=".tmp.png") as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)
    return dest
