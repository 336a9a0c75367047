"""assessment.png: the error matrix in area proportions as a heatmap, and each class's estimated
area with its 95% interval beside the map's own (pixel-count) area."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from pipeline.assess.estimate import StratifiedEstimate

_NAME_CHARS = 28  # BigEarthNet names run to 80 characters; axis labels are cut


def _short(name: str) -> str:
    return name if len(name) <= _NAME_CHARS else name[: _NAME_CHARS - 1] + "…"


def render_assessment(path: Path, estimate: StratifiedEstimate, names: Sequence[str]) -> None:
    import matplotlib

    matplotlib.use("Agg")  # files only; never a window
    import matplotlib.pyplot as plt
    from matplotlib.colors import PowerNorm

    q = len(names)
    labels = [_short(n) for n in names]
    size = max(4.0, 0.45 * q + 2.5)
    fig, (heat, bars) = plt.subplots(1, 2, figsize=(2 * size + 2, size), constrained_layout=True)

    percent = 100 * estimate.proportions
    # A square-root scale: the errors off the diagonal (a few tenths of a percent) stay visible.
    image = heat.imshow(percent, cmap="viridis", norm=PowerNorm(0.5, vmin=0, vmax=max(percent.max(), 1e-9)))
    heat.set_xticks(range(q), labels, rotation=60, ha="right", fontsize=8)
    heat.set_yticks(range(q), labels, fontsize=8)
    heat.set_xlabel("reference class")
    heat.set_ylabel("map class")
    heat.set_title("Error matrix (% of area)")
    if q <= 12:  # numbers stay legible up to about a dozen classes
        for i in range(q):
            for j in range(q):
                dark = percent[i, j] < 0.6 * max(percent.max(), 1e-9)
                heat.text(j, i, f"{percent[i, j]:.1f}", ha="center", va="center", fontsize=7,
                          color="white" if dark else "black")
    fig.colorbar(image, ax=heat, shrink=0.8, label="% of area")

    rows = np.arange(q)
    estimated = np.array([c.area.value for c in estimate.classes])
    half = np.array([c.area.half_width for c in estimate.classes])
    mapped = np.array([c.mapped_area for c in estimate.classes])
    bars.barh(rows - 0.2, estimated, height=0.4, color="#21918c", label="estimated (95% interval)",
              xerr=np.nan_to_num(half), error_kw={"ecolor": "black", "capsize": 3, "elinewidth": 1})
    bars.barh(rows + 0.2, mapped, height=0.4, color="#bbbbbb", label="mapped (pixel count)")
    bars.set_yticks(rows, labels, fontsize=8)
    bars.invert_yaxis()
    bars.set_xlabel("area (ha)")
    overall = estimate.overall
    accuracy = f"{overall.value:.3f} ± {overall.half_width:.3f}" if np.isfinite(overall.se) else f"{overall.value:.3f}"
    bars.set_title(f"Area per class; overall accuracy {accuracy}")
    bars.legend(loc="lower right", fontsize=8)
    fig.savefig(path, dpi=110, format="png")
    plt.close(fig)
