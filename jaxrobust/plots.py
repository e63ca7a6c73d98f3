"""Matplotlib figures. No computation lives here: every function takes finished numbers.

Colours and markers follow the paper (church_window.py, isomap_plot.py): spiral orange #ffa600,
elliptical violet #bc5090, merger navy #003f5c; Y10 "x", Y1 "*", one-pixel (1P) "^".
"""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: no display on servers and CI
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib import animation  # noqa: E402
from matplotlib.colors import ListedColormap  # noqa: E402

from jaxrobust import io  # noqa: E402
from jaxrobust.config import CLASS_NAMES  # noqa: E402

CLASS_COLOURS = ("#ffa600", "#bc5090", "#003f5c")
MARKERS = {"Y10": "X", "Y1": "*", "1P": "^"}


def _save(fig, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    io.atomic_write(path, lambda f: fig.savefig(f, format=path.suffix.lstrip("."), dpi=110, bbox_inches="tight"))
    plt.close(fig)
    return path


def _finish(fig, path: Path, title: str) -> Path:
    """Overall title, tight layout, saved (the last steps of every multi-panel figure)."""
    fig.suptitle(title)
    fig.tight_layout()
    return _save(fig, path)


def _fraction_hist(ax, values: np.ndarray, bins, colour: str, label: str) -> None:
    """A histogram whose bars sum to 1 over `values` (Ćiprijanović et al. 2022, section 5.3, normalise their histograms so)."""
    ax.hist(values, bins=bins, weights=np.full(values.size, 1.0 / values.size), color=colour, alpha=0.6,
            label=label)


def rgb_composite(image_hwc: np.ndarray) -> np.ndarray:
    """Stretched (g, r, i) stamp in [0, 1]-ish -> RGB with i as red and g as blue."""
    rgb = image_hwc[..., ::-1]
    lo, hi = np.percentile(rgb, 1), np.percentile(rgb, 99.9)
    return np.clip((rgb - lo) / max(hi - lo, 1e-12), 0, 1)


# --- Dataset figures ---
def dataset_preview(path: Path, norm10: np.ndarray, norm1: np.ndarray, labels: np.ndarray,
                    per_class: int = 3) -> Path:
    """Paper Figure 2: example galaxies per class, Y10 above its Y1 twin.

    norm10, norm1: (N, H, W, 3) stretched images (g, r, i) of the same galaxies at Y10 and Y1;
    labels: (N,) class indices. The first `per_class` galaxies of each class are shown.
    """
    fig, axes = plt.subplots(2, 3 * per_class, figsize=(2.0 * 3 * per_class, 4.4), squeeze=False)
    for cls, name in enumerate(CLASS_NAMES):
        members = np.flatnonzero(labels == cls)[:per_class]
        for j in range(per_class):
            col = cls * per_class + j
            for row, (images, depth) in enumerate(((norm10, "Y10"), (norm1, "Y1"))):
                ax = axes[row, col]
                ax.set_xticks([])
                ax.set_yticks([])
                if j < len(members):
                    ax.imshow(rgb_composite(images[members[j]]), origin="lower")
                if row == 0:
                    ax.set_title(name, color=CLASS_COLOURS[cls], fontsize=11, fontweight="bold")
                if col == 0:
                    ax.set_ylabel(depth, fontsize=12)
    fig.suptitle("Simulated LSST-like galaxies (g, r, i), each array arcsinh-stretched", fontsize=12)
    return _save(fig, path)


def gini_m20_diagram(path: Path, gini: np.ndarray, m20: np.ndarray, labels: np.ndarray) -> Path:
    """Paper Figure 1: G-M20 plane with the merger (S = 0) and bulge (F = 0) lines."""
    fig, ax = plt.subplots(figsize=(6.2, 5.2))
    for cls, name in enumerate(CLASS_NAMES):
        sel = labels == cls
        ax.scatter(m20[sel], gini[sel], s=8, alpha=0.6, color=CLASS_COLOURS[cls],
                   label=f"{name} ({int(sel.sum())})")
    m20_0 = -0.47 / 0.28  # where the two lines meet: -1.679 (Ćiprijanović et al. 2022, section 2.1; Lotz et al. 2008)
    left = np.linspace(-3.0, m20_0, 10)
    right = np.linspace(m20_0, 0.0, 10)
    ax.plot(np.concatenate([left, right]), -0.14 * np.concatenate([left, right]) + 0.33, "k-", lw=1.2,
            label="merger: G = -0.14 M20 + 0.33")
    ax.plot(left, (0.693 * left + 3.96) / 4.95, "k--", lw=1.2, label="bulge: G = (0.693 M20 + 3.96) / 4.95")
    ax.set_xlim(0.0, -3.0)  # M20 conventionally runs right to left
    ax.set_ylim(0.3, 0.75)
    ax.set_xlabel("M20")
    ax.set_ylabel("Gini")
    ax.legend(fontsize=8, loc="lower right")  # the empty corner: faint, concentrated is impossible
    ax.set_title("Gini-M20 labels of the simulated galaxies")
    return _save(fig, path)


# --- Training ---
def training_curves(path: Path, history: list[dict], title: str = "") -> Path:
    """Loss, accuracy and the DA loss (MMD or CORAL) per epoch; validation accuracy on Y10 and Y1."""
    epochs = np.array([r["epoch"] + 1 for r in history])
    fig, axes = plt.subplots(1, 3, figsize=(14, 3.8))
    axes[0].plot(epochs, [r["train_loss"] for r in history], "o-", ms=3, label="train (total)")
    axes[0].plot(epochs, [r["train_ce"] for r in history], "s--", ms=3, label="train CE")
    axes[0].plot(epochs, [r["val_loss"] for r in history], "^-", ms=3, label="valid CE (Y10)")
    axes[0].set_ylabel("loss")
    axes[1].plot(epochs, [r["train_acc"] for r in history], "o-", ms=3, label="train Y10")
    axes[1].plot(epochs, [r["val_acc_y10"] for r in history], "^-", ms=3, color="#003f5c", label="valid Y10")
    axes[1].plot(epochs, [r["val_acc_y1"] for r in history], "v-", ms=3, color="#bc5090", label="valid Y1")
    axes[1].set_ylabel("accuracy")
    axes[1].set_ylim(0, 1)
    axes[2].plot(epochs, [r["train_da_loss"] for r in history], "o-", ms=3, color="#ffa600", label="train DA loss")
    axes[2].set_ylabel("DA loss (Y10 vs Y1 latents)")
    for ax in axes:
        ax.set_xlabel("epoch")
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    return _finish(fig, path, title)


def confusion_matrices(path: Path, matrices: list, titles: list[str], class_names=CLASS_NAMES) -> Path:
    """Row-normalised confusion matrices side by side, with the counts in each cell."""
    fig, axes = plt.subplots(1, len(matrices), figsize=(4.6 * len(matrices), 4.2), squeeze=False)
    for ax, matrix, title in zip(axes[0], matrices, titles):
        counts = np.asarray(matrix, dtype=float)
        fraction = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
        ax.imshow(fraction, cmap="RdPu", vmin=0, vmax=1)
        for i in range(counts.shape[0]):
            for j in range(counts.shape[1]):
                ax.text(j, i, f"{fraction[i, j]:.2f}\n({int(counts[i, j])})", ha="center", va="center",
                        color="white" if fraction[i, j] > 0.6 else "black", fontsize=9)
        ax.set_xticks(range(len(class_names)), class_names)
        ax.set_yticks(range(len(class_names)), class_names)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        accuracy = np.trace(counts) / max(counts.sum(), 1)
        ax.set_title(f"{title}: accuracy {accuracy:.2f}")
    fig.tight_layout()
    return _save(fig, path)


# --- Latent space ---
def church_window(path: Path, classes: np.ndarray, axis: np.ndarray, true_class: int, target_class: int,
                  title_prefix: str = "") -> Path:
    """Paper Figures 3 and 5: class regions of the head on the (1P, Y1) plane of one triplet."""
    fig, ax = plt.subplots(figsize=(5.6, 5.6))
    extent = (axis[0], axis[-1], axis[0], axis[-1])
    ax.imshow(classes, origin="lower", extent=extent, cmap=ListedColormap(CLASS_COLOURS), vmin=0, vmax=2,
              interpolation="nearest")
    ax.axhline(0, color="k", lw=1)
    ax.axvline(0, color="k", lw=1)
    ax.scatter([0], [0], marker=MARKERS["Y10"], s=220, color="k", label="Y10")
    ax.scatter([1], [0], marker=MARKERS["1P"], s=220, color="k", label="one-pixel (1P)")
    ax.scatter([0], [1], marker=MARKERS["Y1"], s=260, color="k", label="Y1")
    ax.set_xlabel("adversarial (1P) direction")
    ax.set_ylabel("noisy (Y1) direction")
    target = CLASS_NAMES[target_class] if target_class >= 0 else "any"
    ax.set_title(f"{title_prefix}{CLASS_NAMES[true_class]} $\\rightarrow$ {target}", fontsize=13)
    handles = [plt.Rectangle((0, 0), 1, 1, color=c) for c in CLASS_COLOURS]
    markers, labels = ax.get_legend_handles_labels()
    ax.legend(handles + markers, list(CLASS_NAMES) + labels, fontsize=8, ncol=3, loc="upper center",
              bbox_to_anchor=(0.5, -0.12), frameon=False)  # below the axes: the window stays visible
    return _save(fig, path)


def _triplet_markers(ax, proj_triplet, classes_triplet):
    """Y10 (x), Y1 (*) and 1P (^) points of the attacked triplets, filled by their class."""
    for (key, marker), points, cls in zip(MARKERS.items(), proj_triplet, classes_triplet):
        ax.scatter(*np.asarray(points).T, marker=marker, s=260, edgecolors="k", linewidths=1.2,
                   c=[CLASS_COLOURS[c] for c in cls], label=f"triplet: {key}")


def isomap_2d(path: Path, proj_y10: np.ndarray, proj_y1: np.ndarray, pred_y10: np.ndarray, pred_y1: np.ndarray,
              proj_triplet: list, classes_triplet: list, title: str = "") -> Path:
    """Paper Figure 3 (right): Y10 latents filled, Y1 empty, coloured by predicted class."""
    fig, ax = plt.subplots(figsize=(7.5, 6))
    colours = np.asarray(CLASS_COLOURS)
    ax.scatter(*proj_y10.T, s=36, c=colours[pred_y10])
    ax.scatter(*proj_y1.T, s=36, facecolors="none", edgecolors=colours[pred_y1], linewidths=1.2)
    _triplet_markers(ax, proj_triplet, classes_triplet)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title or "Isomap of the latent space (colour: predicted class)")
    legend = [plt.Line2D([], [], ls="", marker="o", color="grey", label="Y10 test galaxy"),
              plt.Line2D([], [], ls="", marker="o", mfc="none", color="grey", label="Y1 twin")]
    legend += [plt.Line2D([], [], ls="", marker="s", color=c, label=n) for n, c in zip(CLASS_NAMES, CLASS_COLOURS)]
    legend += [plt.Line2D([], [], ls="", marker=m, color="k", mfc="white", ms=10, label=f"triplet {k}")
               for k, m in MARKERS.items()]
    ax.legend(handles=legend, fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    return _save(fig, path)


def _isomap_3d_axes(ax, proj_y10, proj_y1, pred_y10, pred_y1, elev, azim):
    colours = np.asarray(CLASS_COLOURS)
    if len(proj_y10) >= 3:
        ax.plot_trisurf(*proj_y10.T, color="#ffa600", alpha=0.18, linewidth=0)
        ax.plot_trisurf(*proj_y1.T, color="#4a90d9", alpha=0.18, linewidth=0)
    ax.scatter(*proj_y10.T, s=22, c=colours[pred_y10], depthshade=False)
    ax.scatter(*proj_y1.T, s=22, facecolors="none", edgecolors=colours[pred_y1], depthshade=False)
    ax.view_init(elev=elev, azim=azim)
    ax.set_xticklabels([])
    ax.set_yticklabels([])
    ax.set_zticklabels([])


def isomap_3d(path: Path, proj_y10, proj_y1, pred_y10, pred_y1, title: str = "",
              angles=((10, -60), (10, 30), (40, 120), (70, 210))) -> Path:
    """Paper Figure 4: 3D isomap from four camera angles; Y10 on an orange surface, Y1 blue."""
    fig = plt.figure(figsize=(16, 4.4))
    for i, (elev, azim) in enumerate(angles):
        ax = fig.add_subplot(1, len(angles), i + 1, projection="3d")
        _isomap_3d_axes(ax, proj_y10, proj_y1, pred_y10, pred_y1, elev, azim)
        ax.set_title(f"elev {elev}, azim {azim}", fontsize=9)
    fig.suptitle(title or "3D isomap: Y10 (filled, orange surface), Y1 (empty, blue surface)")
    return _save(fig, path)


def isomap_animation(path: Path, proj_y10, proj_y1, pred_y10, pred_y1, frames: int = 36, title: str = "") -> Path:
    """Rotating 3D isomap: a GIF (Pillow), and an MP4 beside it when ffmpeg is installed."""
    fig = plt.figure(figsize=(5, 5))
    ax = fig.add_subplot(111, projection="3d")
    _isomap_3d_axes(ax, proj_y10, proj_y1, pred_y10, pred_y1, 15, 0)
    ax.set_title(title, fontsize=10)

    def rotate(i):
        ax.view_init(elev=15, azim=i * 360 / frames)
        return ()

    anim = animation.FuncAnimation(fig, rotate, frames=frames, interval=100, blit=False)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    anim.save(path, writer=animation.PillowWriter(fps=10), dpi=70)
    if animation.writers.is_available("ffmpeg"):
        anim.save(path.with_suffix(".mp4"), writer=animation.FFMpegWriter(fps=10), dpi=90)
    plt.close(fig)
    return path


def distance_histograms(path: Path, panels: list[dict], title: str = "") -> Path:
    """Paper Figure 6: dE histograms of regular (navy) and DA (orange) training.

    panels: [{"title", "regular", "da", "bins" (edges), "js"}]; means violet, medians blue;
    dashed for regular, solid for DA.
    """
    fig, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 4.2), squeeze=False)
    for ax, panel in zip(axes[0], panels):
        for key, colour, style, label in (("regular", "#003f5c", "--", "regular"), ("da", "#ffa600", "-", "DA")):
            d = np.asarray(panel[key])
            if d.size == 0:
                continue
            _fraction_hist(ax, d, panel["bins"], colour, f"{label} (n={d.size})")
            ax.axvline(np.mean(d), color="#bc5090", ls=style, lw=1.6, label=f"{label} mean {np.mean(d):.2f}")
            ax.axvline(np.median(d), color="#1f5fbf", ls=style, lw=1.6, label=f"{label} median {np.median(d):.2f}")
        ax.set_title(f"{panel['title']}   JS = {panel['js']:.2f}")
        ax.set_xlabel("Euclidean distance in latent space $d_E$")
        ax.set_ylabel("fraction of images")
        ax.legend(fontsize=7)
    return _finish(fig, path, title)


# --- Exhaustive one-pixel scan (jaxrobust/scan.py) ---
def scan_vulnerability(path: Path, image: np.ndarray, vulnerability: np.ndarray, flipping: np.ndarray,
                       title: str = "", de_pixel=None) -> Path:
    """A galaxy beside its one-pixel vulnerability map.

    image (H, W, 3) stretched (g, r, i); vulnerability (H, W): at each pixel the highest
    probability of a class other than the true one that a colour of the scanned set reaches;
    flipping (H, W) bool: the pixels that flip the image (outlined in cyan); de_pixel: the
    (row, col) of the DE attack's pixel, marked with a cross on both panels, or None.
    """
    fig, axes = plt.subplots(1, 2, figsize=(10.4, 4.6))
    axes[0].imshow(rgb_composite(np.asarray(image, np.float32)), interpolation="nearest")
    axes[0].set_title("galaxy (Y10, g r i as blue green red)")
    shown = axes[1].imshow(vulnerability, cmap="magma", interpolation="nearest")  # own range: shows weak spots too
    rows, cols = np.nonzero(flipping)
    axes[1].scatter(cols, rows, s=14, facecolors="none", edgecolors="#00e5ff", linewidths=0.8, marker="s",
                    label=f"{rows.size} flipping pixels")
    if de_pixel is not None:
        for ax in axes:
            ax.scatter([de_pixel[1]], [de_pixel[0]], marker="x", s=90, color="#7cfc00", linewidths=2,
                       label="DE's pixel")
    axes[1].set_title("max p(another class) over the colours")
    axes[1].legend(fontsize=8, loc="lower right")
    fig.colorbar(shown, ax=axes[1], fraction=0.046, pad=0.04)
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
    return _finish(fig, path, title)


def scan_flip_counts(path: Path, panels: dict, size: int, title: str = "") -> Path:
    """Distributions of flipping-pixel counts per image, regular (navy) vs DA (orange).

    panels: {panel title: {"regular": counts (n,), "da": counts (m,)}}, e.g. one panel per target
    class and one for any other class; size: pixels per image (the largest possible count).
    Counts are binned on log10(1 + count) so that 0 and 10,000 fit one axis.
    """
    fig, axes = plt.subplots(1, len(panels), figsize=(4.6 * len(panels), 3.9), squeeze=False)
    edges = np.linspace(0.0, np.log10(1 + size), 21)
    for ax, (name, arms) in zip(axes[0], panels.items()):
        for key, colour, label in (("regular", "#003f5c", "regular"), ("da", "#ffa600", "DA")):
            counts = np.asarray(arms.get(key, []), float)
            if counts.size == 0:
                continue
            _fraction_hist(ax, np.log10(1 + counts), edges, colour,
                           f"{label} (n={counts.size}, median {np.median(counts):.0f})")
        ticks = [t for t in (0, 1, 10, 100, 1000, 10000) if t <= size]
        ax.set_xticks(np.log10(1 + np.asarray(ticks, float)), [str(t) for t in ticks])
        ax.set_title(name)
        ax.set_xlabel("flipping pixels per image")
        ax.set_ylabel("fraction of images")
        ax.legend(fontsize=7)
    return _finish(fig, path, title)
