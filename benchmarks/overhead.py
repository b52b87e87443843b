"""Optimizer cost against Adam, measured side by side in one process.

    python -m benchmarks.overhead            # make bench-overhead
    python -m benchmarks.overhead --sizes=1e4,1e5 --repeats=3

For MLPs of about 1e4 .. 1e7 parameters (and the demo's digits CNN), times full
training steps (forward, backward, optimizer update) with every optimizer:
Mnemosyne in each mode, the LSTM learned optimizer and Adam. The optimizers of
one (model, XLA setting) are interleaved over several rounds so that machine
noise hits them alike; the figure is the median step time's ratio to Adam's.
Also: optimizer-state bytes per parameter (Adam: 8 in float32), and the slope
of step time against parameter count (a least-squares line per optimizer over
the sizes; its ratio to Adam's slope is the cost per extra parameter, what
dominates for big models). Ratios, not absolute times, are the result: these
machines are shared and noisy.

Outputs in --out_dir: overhead.json, overhead.md, overhead.png.
"""

import datetime
import json
import math
import os
import platform
import statistics
import sys
import time

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app  # noqa: E402
from absl import flags  # noqa: E402

DEFAULT_SIZES = (1e4, 1e5, 1e6, 1e7)
INPUT_DIM, CLASSES = 64, 10


def mlp_width(params: float) -> int:
  """Width w of a 64-w-w-10 MLP with about `params` parameters."""
  # w^2 + (64 + 1 + 1 + 10) w + 10 = params
  b = INPUT_DIM + CLASSES + 2
  return max(1, int(round((-b + (b * b + 4 * (params - CLASSES)) ** 0.5) / 2)))


def build_mlp(width: int):
  import keras
  return keras.Sequential([keras.Input((INPUT_DIM,)),
                           keras.layers.Dense(width, activation="relu"),
                           keras.layers.Dense(width, activation="relu"),
                           keras.layers.Dense(CLASSES)], name=f"mlp_{width}")


def optimizer_factories(lstm_weights="lstm_v1"):
  """name -> constructor: Mnemosyne per mode (with shipped weights), the LSTM (if
  its weights exist), Adam."""
  import keras
  import mnemosyne_tf
  from mnemosyne_tf import weights as weights_lib
  out = {f"mnemosyne_{mode}": (lambda mode=mode: mnemosyne_tf.Mnemosyne(mode=mode))
         for mode in weights_lib.DEFAULT_WEIGHTS_BY_MODE}
  if lstm_weights and (lstm_weights in weights_lib.SHIPPED or os.path.exists(lstm_weights)):
    out["lstm"] = lambda: mnemosyne_tf.LearnedOptimizer(weights=lstm_weights)
  out["adam"] = lambda: keras.optimizers.Adam(1e-3)
  return out


def make_step(model, optimizer, jit_compile):
  import keras
  import tensorflow as tf
  loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

  def step(x, y):
    with tf.GradientTape() as tape:
      loss = loss_fn(y, model(x, training=True))
    grads = tape.gradient(loss, model.trainable_variables)
    optimizer.apply_gradients(zip(grads, model.trainable_variables))
    return loss

  return tf.function(step, jit_compile=jit_compile)


def state_bytes_per_parameter(optimizer, model) -> float:
  """Bytes of optimizer state (every slot; not the step counter or the
  learning rate) per trainable model parameter."""
  params = sum(int(v.numpy().size) for v in model.trainable_variables)
  slots = [v for v in optimizer.variables
           if v.path.split("/")[-1] not in ("iteration", "learning_rate")]
  return sum(int(v.numpy().size) * v.numpy().dtype.itemsize for v in slots) / params


def measure(build_model, x, y, factories, jit_compile, repeats, steps):
  """{optimizer: {"seconds": median s/step, "state_bytes": per param}} for one
  model and XLA setting; optimizers interleaved over `repeats` rounds. An
  optimizer whose first step runs out of memory is reported with seconds None."""
  import gc
  import keras
  import tensorflow as tf
  runs, out_of_memory = {}, []
  for name, make_opt in factories.items():
    keras.utils.set_random_seed(0)
    model = build_model()
    opt = make_opt()
    step = make_step(model, opt, jit_compile)
    try:
      step(x, y).numpy()  # trace and compile outside the timing
    except tf.errors.ResourceExhaustedError:
      out_of_memory.append(name)
      model = opt = step = None  # release its memory before the next optimizer
      gc.collect()
      continue
    runs[name] = {"step": step, "model": model, "opt": opt, "times": []}
  for _ in range(repeats):
    for run in runs.values():
      start = time.perf_counter()
      for _ in range(steps):
        loss = run["step"](x, y)
      loss.numpy()
      run["times"].append((time.perf_counter() - start) / steps)
  result = {name: {"seconds": statistics.median(run["times"]),
                   "state_bytes": state_bytes_per_parameter(run["opt"], run["model"]),
                   "params": int(run["model"].count_params())}
            for name, run in runs.items()}
  for name in out_of_memory:
    result[name] = {"seconds": None, "state_bytes": None, "params": None}
  return result


def slope(points):
  """Least-squares slope of seconds against parameters over [(params, s)]."""
  n = len(points)
  if n < 2:
    return float("nan")
  mx = sum(p for p, _ in points) / n
  my = sum(s for _, s in points) / n
  sxx = sum((p - mx) ** 2 for p, _ in points)
  return sum((p - mx) * (s - my) for p, s in points) / sxx if sxx else float("nan")


def run_overhead(sizes, factories, repeats, batch_size, include_cnn=True, log=print,
                 max_params=None):
  """Rows of measurements; `max_params` {optimizer: limit} skips an optimizer
  on models above its limit (the LSTM's 80 state floats per parameter and its
  gate activations do not fit 10^7 parameters in this machine's memory)."""
  import numpy as np
  rng = np.random.RandomState(0)
  x = rng.rand(batch_size, INPUT_DIM).astype(np.float32)
  y = rng.randint(0, CLASSES, batch_size).astype(np.int32)
  models = [(f"mlp ~{size:.0e}", lambda w=mlp_width(size): build_mlp(w), x, y)
            for size in sizes]
  if include_cnn:
    from mnemosyne_tf import digits
    x_train, y_train, _, _ = digits.load_split(0)
    models.append(("digits CNN", digits.build_cnn, x_train[:batch_size],
                   y_train[:batch_size]))
  rows = []
  for label, build, bx, by in models:
    params = int(build().count_params())
    steps = int(min(50, max(3, 3e6 // params)))  # about the same work per round
    active = {name: f for name, f in factories.items()
              if params <= (max_params or {}).get(name, float("inf"))}
    for jit in (True, False):
      started = time.time()
      result = measure(build, bx, by, active, jit, repeats, steps)
      adam = result["adam"]["seconds"]
      for name, r in result.items():
        oom = r["seconds"] is None
        rows.append({"model": label, "params": params, "xla": jit, "optimizer": name,
                     "seconds_per_step": r["seconds"],
                     "ratio_to_adam": None if oom or adam is None else r["seconds"] / adam,
                     "state_bytes_per_param": r["state_bytes"], "out_of_memory": oom})
      log(f"{label:12s} {params:>10,d} params  XLA {'on ' if jit else 'off'}  " + "  ".join(
          f"{name} " + ("out of memory" if result[name]["seconds"] is None
                        else "(Adam out of memory)" if adam is None
                        else f"{result[name]['seconds'] / adam:.2f}x")
          for name in result if name != "adam") + f"  ({time.time() - started:.0f} s)")
  slopes, slope_ratios = slopes_of(rows)
  return rows, slopes, slope_ratios


def slopes_of(rows):
  """Per XLA setting and optimizer: the least-squares slope of seconds per step
  against parameter count over the MLPs it ran on, and its ratio to Adam's
  slope over the same MLPs (an optimizer skipped on the big models is compared
  with Adam on the sizes both ran, not on a wider range)."""
  slopes, ratios = {}, {}
  for jit in (True, False):
    tag = "on" if jit else "off"
    times = {}
    for r in rows:
      if r["xla"] == jit and r["model"].startswith("mlp") and r["seconds_per_step"] is not None:
        times.setdefault(r["optimizer"], {})[r["params"]] = r["seconds_per_step"]
    adam = times.get("adam", {})
    for name, by_size in times.items():
      slopes.setdefault(tag, {})[name] = slope(sorted(by_size.items()))
      shared = sorted(set(by_size) & set(adam))
      adam_slope = slope([(p, adam[p]) for p in shared]) if len(shared) >= 2 else 0.0
      ratios.setdefault(tag, {})[name] = (
          slope([(p, by_size[p]) for p in shared]) / adam_slope if adam_slope > 0
          else float("nan"))
  return slopes, ratios


def markdown(rows, slope_ratios, meta) -> str:
  names = list(dict.fromkeys(r["optimizer"] for r in rows if r["optimizer"] != "adam"))
  lines = [f"Overhead benchmark, {meta['date']} on {meta['machine']}; command: "
           f"`{meta['command']}`; median of {meta['repeats']} interleaved rounds, batch "
           f"{meta['batch_size']}. Step time of a full training step as a ratio to Adam's "
           "in the same process.", "",
           "| model | parameters | XLA | " + " | ".join(f"{n} / Adam" for n in names) + " |",
           "|---|---|---|" + "---|" * len(names)]
  keys = list(dict.fromkeys((r["model"], r["params"], r["xla"]) for r in rows))
  for model, params, xla in keys:
    cells = []
    for n in names:
      match = [r for r in rows if (r["model"], r["xla"], r["optimizer"]) == (model, xla, n)]
      cells.append("—" if not match else "out of memory" if match[0]["out_of_memory"]
                   else "— (Adam out of memory)" if match[0]["ratio_to_adam"] is None
                   else f"{match[0]['ratio_to_adam']:.2f}x")
    lines.append(f"| {model} | {params:,d} | {'on' if xla else 'off'} | " + " | ".join(cells)
                 + " |")
  lines += ["", "— = not run (the LSTM above --lstm_max_params: its state and gate "
            "activations do not fit in memory at 10^7 parameters)."]
  lines += ["", "Slope of step time against parameter count (MLPs), as a ratio to Adam's "
            "over the same MLPs: the cost of each extra parameter.", "",
            "| XLA | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
  for xla, ratios in slope_ratios.items():
    lines.append(f"| {xla} | " + " | ".join(
        f"{ratios[n]:.2f}x" if n in ratios and math.isfinite(ratios[n]) else "—"
        for n in names) + " |")
  # State bytes per parameter, per model: constant for a per-coordinate state,
  # falling with tensor size for a per-tensor one (tensor-wise, Super-Mnemosyne).
  everyone = list(names) + ["adam"]
  state = {}
  for r in rows:
    if r["state_bytes_per_param"] is not None:
      state.setdefault(r["optimizer"], {})[(r["model"], r["params"])] = r["state_bytes_per_param"]
  constant = [n for n in everyone if n in state
              and np.ptp(list(state[n].values())) <= 1e-6 * max(state[n].values())]
  lines += ["", "Optimizer-state bytes per parameter (float32), the same for every model: "
            + ", ".join(f"{n} {next(iter(state[n].values())):.3g}" for n in constant) + "."]
  varying = [n for n in everyone if n in state and n not in constant]
  if varying:
    lines += ["", "Per model, for the optimizers whose state is per tensor:", "",
              "| model | parameters | " + " | ".join(varying) + " |",
              "|---|---|" + "---|" * len(varying)]
    for model, params in dict.fromkeys((r["model"], r["params"]) for r in rows):
      lines.append(f"| {model} | {params:,d} | " + " | ".join(
          f"{state[n][(model, params)]:.3g}" if (model, params) in state[n] else "—"
          for n in varying) + " |")
  return "\n".join(lines)


def plot(rows, path):
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  fig, ax = plt.subplots(figsize=(6, 4))
  for name in dict.fromkeys(r["optimizer"] for r in rows if r["optimizer"] != "adam"):
    for xla, style in ((True, "-o"), (False, "--s")):
      pts = sorted((r["params"], r["ratio_to_adam"]) for r in rows if r["optimizer"] == name
                   and r["xla"] == xla and r["model"].startswith("mlp")
                   and r["ratio_to_adam"] is not None)
      if pts:
        ax.plot(*zip(*pts), style, label=f"{name}, XLA {'on' if xla else 'off'}")
  ax.axhline(1.0, color="gray", linewidth=0.8)
  ax.set_xscale("log")
  ax.set_xlabel("parameters (MLP)")
  ax.set_ylabel("step time / Adam's")
  ax.legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)
  return path


def define_flags():
  """Defines this binary's flags (only when it runs as a binary)."""
  flags.DEFINE_list("sizes", [f"{s:.0e}" for s in DEFAULT_SIZES], "MLP sizes (parameters).")
  flags.DEFINE_integer("repeats", 3, "Interleaved timing rounds.")
  flags.DEFINE_integer("batch_size", 64, "Batch size.")
  flags.DEFINE_string("lstm_weights", "lstm_v1", "The LSTM baseline's weights ('' to skip).")
  flags.DEFINE_float("lstm_max_params", 2e6, "Skip the LSTM on bigger models (memory).")
  flags.DEFINE_string("out_dir", None, "Outputs (default benchmarks/results/overhead).")
  flags.DEFINE_bool("tables_only", False, "Measure nothing: rewrite the slopes, overhead.md "
                    "and overhead.png from out_dir/overhead.json (after a change to how they "
                    "are computed).")


def main(argv):
  del argv
  f = flags.FLAGS
  sizes = [float(s) for s in f.sizes]
  if any(s < 100 for s in sizes):
    raise app.UsageError(f"--sizes must be parameter counts >= 100, got {f.sizes}")
  out_dir = f.out_dir or os.path.join(os.path.dirname(os.path.abspath(__file__)), "results",
                                      "overhead")
  if f.tables_only:
    path = os.path.join(out_dir, "overhead.json")
    try:
      with open(path) as fh:
        saved = json.load(fh)
    except (OSError, ValueError) as e:
      raise app.UsageError(f"--tables_only needs a readable {path}: {e}")
    write_outputs(saved["rows"], saved["meta"], out_dir)
    return
  meta = {"date": datetime.date.today().isoformat(),
          "machine": f"{platform.machine()}, {os.cpu_count()} cores, "
                     f"Python {platform.python_version()}",
          "command": "python -m benchmarks.overhead " + " ".join(sys.argv[1:]),
          "repeats": f.repeats, "batch_size": f.batch_size}
  rows, _, _ = run_overhead(sizes, optimizer_factories(f.lstm_weights), f.repeats,
                            f.batch_size, log=lambda line: print(line, flush=True),
                            max_params={"lstm": f.lstm_max_params})
  write_outputs(rows, meta, out_dir)


def write_outputs(rows, meta, out_dir):
  """overhead.json (every number), overhead.md and overhead.png, from the rows."""
  slopes, slope_ratios = slopes_of(rows)
  os.makedirs(out_dir, exist_ok=True)
  from mnemosyne_tf import strict_json
  with open(os.path.join(out_dir, "overhead.json"), "w") as fh:
    json.dump(strict_json.strict({"meta": meta, "rows": rows, "slopes": slopes,
                                  "slope_ratios": slope_ratios}), fh, indent=1, allow_nan=False)
  text = markdown(rows, slope_ratios, meta)
  with open(os.path.join(out_dir, "overhead.md"), "w") as fh:
    fh.write(text + "\n")
  plot(rows, os.path.join(out_dir, "overhead.png"))
  print(text)
  print(f"wrote {out_dir}/overhead.{{json,md,png}}")


if __name__ == "__main__":
  define_flags()
  app.run(main)
