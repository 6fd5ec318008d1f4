"""The architecture table and figure of a model from :func:`covidxray.models.build_model` (notebook 03)."""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.patches import FancyBboxPatch, Patch

from covidxray.style import styled


def _inbound(layer) -> list[str]:
    return [parent.operation.name for node in layer._inbound_nodes for parent in node.parent_nodes]


def architecture_table(model, backbone: str | None = None) -> pd.DataFrame:
    """The model as about twenty rows: input layers, stem, one row per backbone block, head.

    A block row covers every layer after the previous block's output up to and including the
    block's output (``mixed0`` ... ``mixed10`` for InceptionV3); the stem ends at the last layer
    that all of the first block's branches start from.

    Args:
        model: A model from :func:`covidxray.models.build_model`.
        backbone: Registry name (default: from the model's name, ``covidxray_<backbone>``).

    Returns:
        DataFrame with ``block, kind`` (input | stem | block | head | output), ``layers``,
        ``output_shape``, ``params``, ``trainable_params``; rows in data-flow order.
    """
    from covidxray.models import get_backbone

    entry = get_backbone(backbone or model.name.removeprefix("covidxray_"))
    layers = model.layers
    index = {layer.name: i for i, layer in enumerate(layers)}
    pre, gap = index["preprocess_input"], index["gap"]
    bounds = [index[b] for b in (*entry.blocks, entry.last_conv) if b]
    stem_end = max(j for j in range(pre, bounds[0])
                   if all(index[p] >= j for layer in layers[j + 1:bounds[0] + 1] for p in _inbound(layer)))
    spans = [(layers[i].name, "input", i, i) for i in range(pre + 1)]
    spans += [("stem", "stem", pre + 1, stem_end)] if stem_end > pre else []
    starts = [stem_end + 1, *[b + 1 for b in bounds[:-1]]]
    spans += [(layers[b].name, "block", s, b) for s, b in zip(starts, bounds, strict=True)]
    spans += [("top", "block", bounds[-1] + 1, gap - 1)] if bounds[-1] < gap - 1 else []
    spans += [(layers[i].name, "head", i, i) for i in range(gap, len(layers) - 1)]
    spans.append((layers[-1].name, "output", len(layers) - 1, len(layers) - 1))
    rows = []
    for name, kind, start, end in spans:
        group = layers[start:end + 1]
        rows.append({"block": name, "kind": kind, "layers": len(group),
                     "output_shape": "×".join(str(d) for d in layers[end].output.shape[1:]),
                     "params": sum(layer.count_params() for layer in group),
                     "trainable_params": sum(int(np.prod(w.shape)) for layer in group
                                             for w in layer.trainable_weights)})
    return pd.DataFrame(rows)


_KIND_COLORS = {"input": "#E3E3E3", "stem": "#D6E6F4", "block": "#D6E6F4", "head": "#F8DCC6", "output": "#CDEBD9"}


@styled
def architecture_figure(model, backbone: str | None = None, unfreeze_blocks: int | None = None) -> Figure:
    """A compact diagram of the model: one box per row of :func:`architecture_table`, with parameter bars.

    Args:
        model: A model from :func:`covidxray.models.build_model`.
        backbone: Registry name (default: from the model's name).
        unfreeze_blocks: Mark the top blocks that fine-tuning (stage 2) unfreezes.
        save_to: Optional output path (keyword).

    Returns:
        The Figure (diagram axes, parameter axes).
    """
    table = architecture_table(model, backbone)
    n = len(table)
    blocks = table.index[table["kind"] == "block"]
    unfrozen = set(blocks[len(blocks) - unfreeze_blocks:]) if unfreeze_blocks else set()
    fig = Figure(figsize=(9.5, 0.34 * n + 1.2), layout="constrained")
    diagram, bars = fig.subplots(1, 2, sharey=True, gridspec_kw={"width_ratios": [1.5, 1]})
    diagram.plot([0.5, 0.5], [0, n - 1], color="#999999", lw=1.2, zorder=0)
    for i, rec in table.iterrows():
        color = "#8DB9DE" if i in unfrozen else _KIND_COLORS[rec["kind"]]
        diagram.add_patch(FancyBboxPatch((0.03, i - 0.36), 0.94, 0.72, boxstyle="round,pad=0,rounding_size=0.12",
                                         facecolor=color, edgecolor="#777777", lw=0.8))
        extra = f"  · {rec['layers']} layers" if rec["layers"] > 1 else ""
        diagram.text(0.06, i, f"{rec['block']}{extra}", va="center", fontsize=9,
                     fontweight="bold" if rec["kind"] == "block" else "normal")
        diagram.text(0.94, i, rec["output_shape"], va="center", ha="right", fontsize=9, family="monospace")
    diagram.set(xlim=(0, 1), ylim=(n - 0.5, -0.5), xticks=[], yticks=[], title="layers → output shape (H×W×C)")
    diagram.grid(False)
    diagram.spines[:].set_visible(False)
    frozen = (table["params"] - table["trainable_params"]) / 1e6
    bars.barh(table.index, table["trainable_params"] / 1e6, color="#0072B2", label="trainable")
    bars.barh(table.index, frozen, left=table["trainable_params"] / 1e6, color="#B9B9B9", label="not trainable")
    for i, p in enumerate(table["params"]):
        if p:
            bars.text(p / 1e6, i, f" {p / 1e6:.2f} M" if p >= 1e4 else f" {p:,}", va="center", fontsize=8)
    bars.set_xlim(0, table["params"].max() / 1e6 * 1.3)
    bars.set(xlabel="Parameters (millions)", title="parameters per block")
    bars.grid(axis="y", visible=False)
    handles = bars.get_legend_handles_labels()[0]
    if unfrozen:
        handles.append(Patch(facecolor="#8DB9DE", edgecolor="#777777",
                             label=f"unfrozen in stage 2 (top {unfreeze_blocks})"))
    bars.legend(handles=handles, loc="lower right", fontsize=8)
    total, trainable = table["params"].sum(), table["trainable_params"].sum()
    size = table.loc[0, "output_shape"]
    fig.suptitle(f"{model.name}: {size} grey input → {table.iloc[-1]['output_shape']} class probabilities, "
                 f"{total / 1e6:.1f} M parameters ({trainable / 1e6:.1f} M trainable)", fontsize=11)
    return fig
