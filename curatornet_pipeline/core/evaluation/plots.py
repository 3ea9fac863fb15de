"""Small figures shared by several stages, rendered to PNG bytes (matplotlib, Agg)."""

import io
from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def to_png(fig) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    return buffer.getvalue()


def training_curve(history: Sequence[dict], title: str) -> bytes:
    """Loss and the validation figure per epoch: the held-out baskets' AUC when the
    history has it (what chooses the best epoch), else the triple accuracy."""
    epochs = [h["epoch"] for h in history]
    fig, ax = plt.subplots(figsize=(6, 3.2))
    ax.plot(epochs, [h["loss"] for h in history], "o-", color="tab:blue", label="training loss")
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss", color="tab:blue")
    ax2 = ax.twinx()
    ranked = all("val_auc" in (h.get("metrics") or {}) for h in history) and history
    values = [h["metrics"]["val_auc"] if ranked else h["val_accuracy"] for h in history]
    name = "validation AUC (held-out baskets)" if ranked else "validation accuracy"
    ax2.plot(epochs, values, "s-", color="tab:orange", label=name)
    ax2.set_ylabel(name, color="tab:orange")
    ax.set_title(title)
    fig.tight_layout()
    return to_png(fig)
