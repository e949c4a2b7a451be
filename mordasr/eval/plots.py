"""Figures for `mordasr analyze` and `mordasr benchmark` (matplotlib, Agg backend, PNG files).

Each function takes the rows of a table from :mod:`mordasr.eval.analysis` (or image arrays),
draws one complete figure (title, axis labels, legend or colourbar) and writes it to ``path``.
matplotlib is the optional ``analyze`` extra; :func:`pyplot` says how to install it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

INSTALL_HINT = "plots need matplotlib: pip install 'mordasr[analyze]'"


class MissingMatplotlibError(ImportError):
    """matplotlib is not installed."""


def pyplot() -> Any:
    """``matplotlib.pyplot`` on the file-only Agg backend, or a one-line install hint."""
    try:
        import matplotlib
    except ImportError as error:
        raise MissingMatplotlibError(INSTALL_HINT) from error
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def short_names(names: list[str]) -> list[str]:
    """Layer names without the dotted prefix they all share (``backbone.`` and the like)."""
    if len(names) < 2:
        return names
    parts = [n.split(".") for n in names]
    common = 0
    while all(len(p) > common + 1 and p[common] == parts[0][common] for p in parts):
        common += 1
    return [".".join(p[common:]) for p in parts]


DPI = 110
MIN_PANEL = 96
"""Smallest width in pixels of one crop of the comparison figure."""


def _save(fig: Any, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI, bbox_inches="tight", pad_inches=0.05)
    pyplot().close(fig)
    return path


def plot_zero_experts_per_layer(
    rows: list[dict[str, Any]], sets: list[str], top_k: int, path: Path
) -> Path:
    """Grouped bars: mean zero experts kept per image in every layer, one colour per set."""
    plt = pyplot()
    layers = short_names([r["layer"] for r in rows])
    x = np.arange(len(rows))
    width = 0.8 / len(sets)
    fig, ax = plt.subplots(figsize=(max(7.0, 0.28 * len(rows) * len(sets) + 2), 4.2))
    for i, name in enumerate(sets):
        offset = (i - (len(sets) - 1) / 2) * width
        ax.bar(x + offset, [r[name] for r in rows], width, label=name)
    ax.set_xticks(x, layers, rotation=75, ha="right", fontsize=7)
    ax.set_xlim(-0.6, len(rows) - 0.4)
    ax.set_xlabel("MoR layer (network order)")
    ax.set_ylabel(f"zero experts kept per image (of top-{top_k})")
    ax.set_title("Zero-expert activations per layer, by degradation severity")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(title="degradation", loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return _save(fig, path)


def plot_expert_frequency(
    rows: list[dict[str, Any]], sets: list[str], layer: str, path: Path
) -> Path:
    """Heatmap: how often each degradation type keeps each routed slot of one layer."""
    plt = pyplot()
    freq = np.array([[r[name] for r in rows] for name in sets])
    num_real = sum(r["kind"] == "real" for r in rows)
    fig, ax = plt.subplots(figsize=(max(7.0, 0.25 * len(rows) + 2.5), 0.55 * len(sets) + 2.2))
    image = ax.imshow(freq, aspect="auto", cmap="viridis", vmin=0.0, vmax=1.0)
    if num_real < len(rows):
        ax.axvline(num_real - 0.5, color="white", linewidth=2)
        ax.text(
            (num_real + len(rows) - 1) / 2,
            1.01,
            "zero experts",
            transform=ax.get_xaxis_transform(),
            ha="center",
            va="bottom",
            fontsize=8,
        )
    ax.set_xticks(np.arange(len(rows)), [str(r["slot"]) for r in rows], fontsize=7)
    ax.set_yticks(np.arange(len(sets)), sets)
    ax.set_xlabel("routed slot (expert index)")
    ax.set_ylabel("degradation")
    ax.set_title(f"Expert activation frequency in {layer}", pad=18)
    fig.colorbar(image, ax=ax, label="fraction of images keeping the slot", pad=0.02)
    return _save(fig, path)


def plot_real_experts_vs_score(rows: list[dict[str, Any]], path: Path) -> Path:
    """Scatter: real experts kept per layer against the image's severity, one colour per set."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    names = list(dict.fromkeys(r["set"] for r in rows))
    for i, name in enumerate(names):
        sev = np.array([r["severity"] for r in rows if r["set"] == name])
        real = np.array([r["real_experts"] for r in rows if r["set"] == name])
        colour = f"C{i}"
        ax.scatter(sev, real, s=22, alpha=0.7, color=colour, label=f"{name} (n={len(sev)})")
        ax.scatter(sev.mean(), real.mean(), s=140, marker="X", color=colour, edgecolor="black")
    ax.scatter([], [], s=100, marker="X", color="gray", edgecolor="black", label="set mean")
    ax.set_xlabel("degradation severity (mean estimator score)")
    ax.set_ylabel("real experts kept per layer (mean over layers)")
    ax.set_title("Active real experts vs degradation severity")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)


def plot_comparison(
    grid: list[list[np.ndarray]], columns: list[str], rows: list[str], path: Path
) -> Path:
    """Image grid: one row per image, one titled column per method, no axes; each crop is
    drawn at its own pixel size (at least ``MIN_PANEL`` pixels wide, enlarged nearest)."""
    plt = pyplot()
    height, width = grid[0][0].shape[:2]
    zoom = max(1, -(-MIN_PANEL // width))
    panel_w, panel_h = width * zoom / DPI, height * zoom / DPI
    gap, title, label = 0.04, 0.25, 0.2
    fig_w = label + len(columns) * panel_w + (len(columns) - 1) * gap
    fig_h = title + len(grid) * panel_h + (len(grid) - 1) * gap
    fig, axes = plt.subplots(len(grid), len(columns), figsize=(fig_w, fig_h), squeeze=False)
    fig.subplots_adjust(
        left=label / fig_w,
        right=1.0,
        bottom=0.0,
        top=1.0 - title / fig_h,
        wspace=gap / panel_w,
        hspace=gap / panel_h,
    )
    for r, (row, name) in enumerate(zip(grid, rows, strict=True)):
        for c, image in enumerate(row):
            ax = axes[r][c]
            ax.imshow(image, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(columns[c], fontsize=8)
            if c == 0:
                ax.set_ylabel(name, fontsize=8)
    return _save(fig, path)


def plot_region_map(
    image: np.ndarray,
    values: np.ndarray,
    title: str,
    label: str,
    path: Path,
    value_range: tuple[float, float] | None = None,
) -> Path:
    """The image (H, W, 3) in gray with ``values`` (a region grid or a per-pixel map, any
    resolution, stretched over the whole image) laid over it in colour, with a colourbar."""
    plt = pyplot()
    height, width = image.shape[:2]
    scale = 6.4 / max(height, width)
    fig, ax = plt.subplots(figsize=(max(3.0, width * scale) + 1.2, max(2.0, height * scale)))
    ax.imshow(image.mean(axis=2), cmap="gray", vmin=0.0, vmax=1.0, extent=(0, width, height, 0))
    low, high = value_range if value_range is not None else (None, None)
    overlay = ax.imshow(
        values,
        cmap="magma",
        alpha=0.6,
        vmin=low,
        vmax=high,
        interpolation="nearest",
        extent=(0, width, height, 0),
    )
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title, fontsize=9)
    fig.colorbar(overlay, ax=ax, label=label, fraction=0.046, pad=0.02)
    return _save(fig, path)
