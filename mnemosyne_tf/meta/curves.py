"""Plots of meta-training (metrics.jsonl -> PNG)."""

import json

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def _smooth(values, width):
  values = np.asarray(values, float)
  if len(values) < width:
    return values
  kernel = np.ones(width) / width
  return np.convolve(values, kernel, mode="valid")


def plot_metrics(metrics_path: str, png_path: str) -> str:
  """Meta-loss per task and mean, smoothed over 5% of the run."""
  with open(metrics_path) as f:
    records = [json.loads(line) for line in f]
  steps = [r["step"] for r in records]
  width = max(1, len(records) // 20)
  fig, ax = plt.subplots(figsize=(8, 4.5))
  for name in records[0]["per_task"]:
    values = [r["per_task"][name] for r in records]
    smooth = _smooth(values, width)
    ax.plot(steps[len(steps) - len(smooth):], smooth, lw=1, alpha=0.7, label=name)
  mean = _smooth([r["meta_loss"] for r in records], width)
  ax.plot(steps[len(steps) - len(mean):], mean, "k", lw=2, label="mean")
  ax.set(xlabel="meta-step", ylabel="meta-loss (mean log training loss over a segment)",
         title=f"Meta-training (moving average over {width} meta-steps)")
  ax.grid(alpha=0.3)
  ax.legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(png_path, dpi=110)
  plt.close(fig)
  return png_path
