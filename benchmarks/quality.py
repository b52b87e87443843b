r"""Quality benchmark: Mnemosyne against tuned baselines, side by side in one run.

    python -m benchmarks.quality --quick     # make bench-quick (under 10 minutes: 1 seed,
                                             # Adam's grid 1e-3/1e-2/1e-1, 400 steps)
    python -m benchmarks.quality             # make bench (the full run: hours on 2 cores)

Every (problem, optimizer, seed) run starts from the same fresh model (built
from the seed) and sees the same batches (stateless in (seed, step)); only the
optimizer differs. Optimizers: Mnemosyne in each mode with its shipped default
weights (no tuning); the LSTM learned optimizer (Andrychowicz et al.,
meta-trained by our binary with Mnemosyne's budget); Adam at 1e-3; Adam,
RMSProp and SGD with momentum 0.9 at every point of a log grid of learning
rates (7 points 1e-4 .. 1e-1; the best point, chosen by mean final loss over
seeds, is "tuned").

Figures (DESIGN §6), at 1x (--horizon, the meta-training horizon) and at
--steps (10x by default; the JSON calls it "10x" whatever the multiple, and
the markdown prints the real one): final training loss = mean minibatch loss
over the last 5% of the steps; the held-out metric of the problem (at the end);
steps to reach tuned Adam's final loss (at --steps); wall time of the run
(compile included). Mean and sample standard deviation over seeds. A run
diverges if its loss becomes NaN/Inf (its final loss is then inf).

Outputs in --out_dir: runs.json (every run, re-used when the command is run
again: an interrupted benchmark continues; each new run records its library
versions and CPU, and `--verify=K` re-runs K cached runs to check that they
reproduce), results.json (every aggregated number and the run's
date, machine and command), results.md (the table), and curves.png (loss
against steps per problem, every optimizer, band = spread over seeds).
"""

import datetime
import itertools
import json
import math
import os
import platform
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app  # noqa: E402
from absl import flags  # noqa: E402

FULL_GRID = tuple(float(f"{10 ** (-4 + i / 2):.3g}") for i in range(7))  # 1e-4 .. 1e-1
QUICK_GRID = (1e-3, 1e-2, 1e-1)
FAMILIES = ("adam", "rmsprop", "sgdm")
FAMILY_NAMES = {"adam": "Adam", "rmsprop": "RMSProp", "sgdm": "SGD-momentum"}
LSTM_WEIGHTS = "lstm_v1"


# ----------------------------------------------------------------- optimizers
def optimizer_specs(grid, lstm_weights=LSTM_WEIGHTS, modes=None, families=FAMILIES):
  """The optimizer list: learned ones first, then each family over the grid."""
  unknown = set(families) - set(FAMILIES)
  if unknown:
    raise ValueError(f"unknown optimizer families {sorted(unknown)}; known: {FAMILIES}")
  from mnemosyne_tf import weights as weights_lib
  specs = [f"mnemosyne:{mode}" for mode in (modes or weights_lib.DEFAULT_WEIGHTS_BY_MODE)]
  if lstm_weights:
    if not (lstm_weights in weights_lib.SHIPPED or os.path.exists(lstm_weights)):
      raise ValueError(f"LSTM baseline weights {lstm_weights!r}: not a shipped name "
                       f"{sorted(weights_lib.SHIPPED)} nor a file")
    specs.append(f"learned:{lstm_weights}")
  specs += [f"{family}:{lr:g}" for family in families for lr in grid]
  return specs


def make_optimizer(spec: str):
  """'mnemosyne:<mode>', 'learned:<weights>', '<adam|rmsprop|sgdm>:<lr>'."""
  import keras
  import mnemosyne_tf
  kind, _, arg = spec.partition(":")
  if kind == "mnemosyne":
    return mnemosyne_tf.Mnemosyne(mode=arg)
  if kind == "learned":
    return mnemosyne_tf.LearnedOptimizer(weights=arg)
  if kind in FAMILIES:
    try:
      lr = float(arg)
    except ValueError:
      lr = float("nan")
    if not (math.isfinite(lr) and lr > 0):
      raise ValueError(f"optimizer spec {spec!r}: the learning rate must be a number > 0")
    if kind == "adam":
      return keras.optimizers.Adam(lr)
    if kind == "rmsprop":
      return keras.optimizers.RMSprop(lr)
    return keras.optimizers.SGD(lr, momentum=0.9)
  raise ValueError(f"unknown optimizer spec {spec!r}: expected mnemosyne:<mode>, "
                   f"learned:<weights> or one of {FAMILIES} with :<learning rate>")


# The modules a learned optimizer runs (relative to the mnemosyne_tf package).
# Not the registry of shipped names (weights/__init__.py): a run's key holds
# the checksum of the weights its spec resolved to, so shipping new weights or
# changing a default re-runs only the runs whose weights changed.
_OPTIMIZER_SOURCES = ("__init__.py", "optimizer.py", "rule.py", "core", "baselines",
                      os.path.join("weights", "file_format.py"))


def optimizer_source_paths() -> list:
  """The files `optimizer_source_version` hashes, relative to the package."""
  import mnemosyne_tf
  root = os.path.dirname(os.path.abspath(mnemosyne_tf.__file__))
  paths = []
  for entry in _OPTIMIZER_SOURCES:
    full = os.path.join(root, entry)
    if os.path.isdir(full):
      paths += [os.path.join(entry, n) for n in os.listdir(full) if n.endswith(".py")]
    else:
      paths.append(entry)
  return sorted(paths)


def optimizer_source_version() -> str:
  """Checksum of the learned optimizers' source (what `Mnemosyne` and
  `LearnedOptimizer` run: the front end, the rule, the core, the baselines,
  the weights file reader). A float-rounding change there changes long runs,
  so it is part of the cache key of every learned-optimizer run."""
  import hashlib
  import mnemosyne_tf
  root = os.path.dirname(os.path.abspath(mnemosyne_tf.__file__))
  paths = [os.path.join(root, p) for p in optimizer_source_paths()]
  digest = hashlib.sha256()
  for path in sorted(paths):
    digest.update(os.path.relpath(path, root).encode())
    with open(path, "rb") as f:
      digest.update(f.read())
  return digest.hexdigest()[:12]


def spec_version(spec: str) -> str:
  """What identifies the optimizer's behaviour in the run cache: for a learned
  optimizer, its weights checksum and the optimizer source's; for a Keras
  baseline, the spec (the Keras version is recorded with each run). The
  weights checksum covers the arrays only, so the network config (which can
  change the rule with the same arrays, e.g. step adaptation) is hashed too."""
  if spec.split(":")[0] in ("mnemosyne", "learned"):
    import hashlib
    optimizer = make_optimizer(spec)
    config = hashlib.sha256(json.dumps(optimizer.network_config, sort_keys=True)
                            .encode()).hexdigest()[:8]
    return (f"{spec}@{optimizer.weights_sha256[:16]}@cfg={config}"
            f"@src={optimizer_source_version()}")
  return spec


def code_version() -> str:
  """Checksum of what defines a run besides its key's other fields: the
  problems, the training loop and the figures, and the Python minor version
  (the text corpus is CPython's own documentation). Part of every cache key,
  so editing any of them re-runs rather than reuses."""
  import hashlib
  import inspect
  from benchmarks import problems
  parts = [inspect.getsource(problems), inspect.getsource(train_run),
           inspect.getsource(final_loss), inspect.getsource(_finals),
           f"{sys.version_info[0]}.{sys.version_info[1]}"]
  return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:12]


def environment() -> dict:
  """What a run's numbers may depend on besides its cache key: the library
  versions. Recorded with every run (not part of the key: a new patch release
  should not discard hours of baselines); the results say how many
  environments their runs span, and --verify re-runs cached runs to check that
  they still come out the same."""
  import keras
  import numpy
  import sklearn
  import tensorflow as tf
  return {"python": platform.python_version(), "tensorflow": tf.__version__,
          "keras": keras.__version__, "numpy": numpy.__version__,
          "sklearn": sklearn.__version__, "cpu": _cpu()}


def _cpu() -> str:
  """The CPU model and a checksum of its instruction-set flags: TF's CPU
  kernels (oneDNN) pick code paths by instruction set, which changes float
  rounding."""
  import hashlib
  model, isa = platform.machine(), ""
  try:
    with open("/proc/cpuinfo") as f:
      for line in f:
        key, _, value = line.partition(":")
        if key.strip() == "model name" and model == platform.machine():
          model = value.strip()
        elif key.strip() == "flags" and not isa:
          isa = hashlib.sha256(" ".join(sorted(value.split())).encode()).hexdigest()[:8]
  except OSError:
    pass
  return f"{model}" + (f" (flags {isa})" if isa else "")


def _environment_id(env) -> str:
  return ("unrecorded" if not env else
          ", ".join(f"{k} {v}" for k, v in sorted(env.items())))


_NETWORK_NAMES = {"lstm": "LSTM", "coordinate": "Mnemosyne", "tensor": "Mnemosyne",
                  "super": "Mnemosyne"}


def label(spec: str) -> str:
  kind, _, arg = spec.partition(":")
  if kind == "mnemosyne":
    return f"Mnemosyne ({arg})"
  if kind == "learned":  # named by the network its weights are for
    from mnemosyne_tf import weights as weights_lib
    network = weights_lib.load_weights(arg).network
    return f"{_NETWORK_NAMES.get(network, 'Learned')} ({arg})"
  return f"{FAMILY_NAMES[kind]} {float(arg):g}"


# ----------------------------------------------------------------- one run
def train_run(problem_name: str, spec: str, steps: int, seed: int, points: int = 100,
              jit_compile: bool = False, horizon: int = None) -> dict:
  """Trains a fresh problem with a fresh optimizer; minibatch losses, averaged
  over `points` equal chunks, the finals and the held-out metrics."""
  import numpy as np
  import tensorflow as tf
  from benchmarks import problems
  if steps % points:
    raise ValueError(f"steps ({steps}) must be a multiple of the curve points ({points})")
  problem = problems.make(problem_name, seed)
  started = time.time()  # the run's own time: not the problem's (cached) pre-training
  optimizer = make_optimizer(spec)
  optimizer.build(problem.variables)
  chunk = steps // points
  seed_tensor = tf.constant([seed, 0], tf.int32)

  @tf.function(jit_compile=jit_compile)
  def run_chunk(first):
    losses = tf.TensorArray(tf.float32, size=chunk)
    for i in tf.range(chunk):
      inputs, targets = problem.batch(seed_tensor, first + i)
      with tf.GradientTape() as tape:
        loss = problem.loss(inputs, targets)
      grads = tape.gradient(loss, problem.variables)
      optimizer.apply_gradients(zip(grads, problem.variables))
      losses = losses.write(i, loss)
    return losses.stack()

  losses = []
  for first in range(0, steps, chunk):
    values = run_chunk(tf.constant(first, tf.int32)).numpy()
    losses.extend(float(v) for v in values)
    if not np.all(np.isfinite(values)):
      break
  diverged = len(losses) < steps or not all(math.isfinite(v) for v in losses)
  curve = [float(np.mean(losses[i:i + chunk])) for i in range(0, len(losses), chunk)]
  metrics = {} if diverged else problem.metrics()
  return {"curve": curve, "chunk": chunk, "steps": steps,
          "losses_at": _finals(losses, steps, horizon), "diverged": diverged,
          "metrics": metrics, "wall_seconds": time.time() - started}


def final_loss(losses, horizon: int) -> float:
  """Mean minibatch loss over the last 5% of the first `horizon` steps."""
  if len(losses) < horizon:
    return float("inf")
  window = losses[horizon - max(1, horizon // 20):horizon]
  value = sum(window) / len(window)
  return value if math.isfinite(value) else float("inf")


def _finals(losses, steps, horizon=None):
  """Final losses at every tenth of the run, at the 1x horizon and at the end."""
  marks = set(range(steps // 10, steps + 1, steps // 10)) if steps >= 10 else set()
  marks |= {steps} | ({horizon} if horizon else set())
  return {str(h): final_loss(losses, h) for h in sorted(marks)}


def steps_to_reach(run: dict, target: float):
  """First step at which the loss, averaged like the final loss (over a window
  of 5% of the run, in whole curve chunks), is <= target; None if never, if the
  run diverged, or if the target is not finite."""
  if run["diverged"] or target is None or not math.isfinite(target):
    return None
  curve = run["curve"]
  window = max(1, round(0.05 * run["steps"] / run["chunk"]))
  for i in range(window - 1, len(curve)):
    if sum(curve[i - window + 1:i + 1]) / window <= target * (1 + 1e-6):
      return (i + 1) * run["chunk"]
  return None


# ----------------------------------------------------------------- aggregation
def _mean_std(values):
  finite = [v for v in values if v is not None and math.isfinite(v)]
  if len(finite) < len(values):
    return float("inf"), float("nan")
  mean = sum(finite) / len(finite)
  if len(finite) < 2:
    return mean, float("nan")
  std = math.sqrt(sum((v - mean) ** 2 for v in finite) / (len(finite) - 1))  # sample std
  return mean, std


def aggregate(runs: dict, problem_names, specs, seeds, steps, horizon) -> dict:
  """Per problem: each optimizer's mean/std figures, tuned points, ranking."""
  out = {}
  for name in problem_names:
    per_spec = {}
    for spec in specs:
      rs = [runs[(name, spec, seed)] for seed in seeds]
      entry = {"label": label(spec)}
      for tag, h in (("1x", horizon), ("10x", steps)):
        entry[f"loss_{tag}"], entry[f"loss_{tag}_std"] = _mean_std(
            [r["losses_at"][str(h)] for r in rs])
      entry["diverged"] = sum(r["diverged"] for r in rs)
      entry["wall_seconds"], entry["wall_seconds_std"] = _mean_std(
          [r["wall_seconds"] for r in rs])
      metric_names = sorted(set().union(*(r["metrics"] for r in rs)))
      entry["metrics"] = {m: _mean_std([r["metrics"].get(m, float("nan")) for r in rs])
                          for m in metric_names}
      per_spec[spec] = entry
    tuned = {}
    for family in FAMILIES:
      members = [s for s in specs if s.startswith(family + ":")]
      if members:
        tuned[family] = {tag: min(members, key=lambda s: per_spec[s][f"loss_{tag}"])
                         for tag in ("1x", "10x")}
    # Steps to reach tuned Adam's final loss on the same seed (same batches);
    # n/a when there is no Adam grid or every point of it diverged.
    targets = ({seed: runs[(name, tuned["adam"]["10x"], seed)]["losses_at"][str(steps)]
                for seed in seeds}
               if "adam" in tuned and math.isfinite(per_spec[tuned["adam"]["10x"]]["loss_10x"])
               else {})
    for spec in specs:
      reach = [steps_to_reach(runs[(name, spec, seed)], targets[seed]) for seed in targets]
      reached = [r for r in reach if r is not None]
      entry = per_spec[spec]
      entry["steps_to_tuned_adam_seeds_reached"] = len(reached)
      if not targets:
        entry["steps_to_tuned_adam"], entry["steps_to_tuned_adam_std"] = "n/a", None
      elif len(reached) < len(reach):  # a mean over the seeds that reached would flatter
        entry["steps_to_tuned_adam"], entry["steps_to_tuned_adam_std"] = None, None
      else:
        entry["steps_to_tuned_adam"], entry["steps_to_tuned_adam_std"] = _mean_std(reached)
    out[name] = {"optimizers": per_spec, "tuned": tuned,
                 "tuned_adam_final_loss": {str(k): v for k, v in targets.items()}}
  return out


def grid_rank(per_spec, spec, family, tag):
  """How many points of `family`'s grid beat `spec` at horizon `tag`."""
  value = per_spec[spec][f"loss_{tag}"]
  return sum(per_spec[s][f"loss_{tag}"] < value for s in per_spec
             if s.startswith(family + ":"))


# ----------------------------------------------------------------- outputs
def _fmt(mean, std=None):
  if mean is None:
    return "—"
  if not math.isfinite(mean):
    return "diverged"
  text = f"{mean:.4f}" if abs(mean) >= 1e-3 else f"{mean:.2e}"
  if std is None or not math.isfinite(std):  # one seed: no spread to show
    return text
  return text + f" ± {std:.2g}"


def _fmt_steps(entry, num_seeds):
  reach = entry["steps_to_tuned_adam"]
  if reach == "n/a":
    return "n/a"
  if reach is None:
    reached = entry["steps_to_tuned_adam_seeds_reached"]
    return "never" if reached == 0 else f"{reached}/{num_seeds} seeds"
  std = entry.get("steps_to_tuned_adam_std")
  return f"{reach:.0f}" + (f" ± {std:.0f}" if std is not None and math.isfinite(std) else "")


def _adam_default(specs):
  """The spec of Adam at 1e-3 in `specs` (however it is written), or None."""
  for spec in specs:
    kind, _, arg = spec.partition(":")
    if kind == "adam" and float(arg) == 1e-3:
      return spec
  return None


def summary_markdown(results: dict, meta: dict) -> str:
  """Every problem in one table per horizon: each untuned optimizer's mean final
  loss [how many of Adam's grid points beat it], each family's tuned point, and
  per learned optimizer how often it beats Adam(1e-3) and is within one grid
  point of tuned Adam."""
  names = list(results)
  first = results[names[0]]["optimizers"]
  untuned = [s for s in first if s.split(":")[0] not in FAMILIES]
  adam_default = _adam_default(first)
  families = [f for f in FAMILIES if f in results[names[0]]["tuned"]]
  lines = []
  for tag, at in (("1x", meta["horizon"]), ("10x", meta["steps"])):
    multiple = f"{at / meta['horizon']:g}x"
    lines += [f"Final training loss at {at} steps ({multiple}), mean over seeds {meta['seeds']}; "
              "in brackets, how many points of Adam's grid do better; tuned = the family's "
              "best grid point (its learning rate in brackets).", "",
              "| problem | " + " | ".join(first[s]["label"] for s in untuned)
              + (" | Adam 1e-3" if adam_default else "")
              + "".join(f" | {FAMILY_NAMES[f]}, tuned" for f in families) + " |",
              "|---|" + "---|" * (len(untuned) + bool(adam_default) + len(families))]
    wins = {s: [0, 0] for s in untuned}
    for name in names:
      per_spec, tuned = results[name]["optimizers"], results[name]["tuned"]
      cells = []
      for spec in untuned + ([adam_default] if adam_default else []):
        e = per_spec[spec]
        rank = grid_rank(per_spec, spec, "adam", tag) if "adam" in tuned else None
        cells.append(_fmt(e[f"loss_{tag}"]) + (f" [{rank}]" if rank is not None else ""))
        if spec in wins and adam_default:
          wins[spec][0] += e[f"loss_{tag}"] < per_spec[adam_default][f"loss_{tag}"]
          wins[spec][1] += rank is not None and rank <= 1
      for family in families:
        pick = tuned[family][tag]
        cells.append(f"{_fmt(per_spec[pick][f'loss_{tag}'])} ({pick.split(':')[1]})")
      lines.append(f"| {name} | " + " | ".join(cells) + " |")
    if adam_default and "adam" in families:
      lines += ["", f"At {multiple}: " + "; ".join(
          f"{first[s]['label']} beats Adam 1e-3 on {w[0]}/{len(names)} problems and is within "
          f"one grid point of tuned Adam on {w[1]}/{len(names)}" for s, w in wins.items())
          + "."]
    lines.append("")
  return "\n".join(lines)


def markdown(results: dict, meta: dict) -> str:
  h, n = meta["horizon"], meta["steps"]
  multiple = f"{n / h:g}x"
  environments = meta.get("environments", {})
  lines = [f"Quality benchmark, {meta['date']} on {meta['machine']}; command: "
           f"`{meta['command']}`; seeds {meta['seeds']}, {n} steps "
           f"(1x = {h}, the meta-training horizon; {n} = {multiple}), "
           f"learning-rate grid {meta['grid']}.", "",
           "Final training loss = mean minibatch loss over the last 5% of the steps "
           "(mean ± sample std over seeds). 'Grid points of Adam better' counts the points "
           "of Adam's learning-rate grid with a lower mean final loss (0 = as good as tuned "
           "Adam). Held-out metrics are measured at the end of the run. 'Steps to tuned "
           f"Adam' = steps to reach, on the same seed, tuned Adam's final loss at {n} steps "
           "(mean ± std when every seed reaches it; else how many seeds do). Wall time "
           "is the run's own (compilation included, the problem's pre-training not), "
           "as measured when the run was made.", ""]
  if environments:
    lines += ["Runs by environment (library versions and CPU; `--verify` "
              "re-runs cached runs to check they reproduce): " + "; ".join(
                  f"{count} runs: {env}" for env, count in environments.items()) + ".", ""]
  if meta.get("verify"):
    lines += ["Reproducibility (`--verify`: cached runs re-run in this process, compared "
              "chunk by chunk):"]
    for same_env, what in ((True, "made in this environment"),
                           (False, "made in another or an unrecorded environment")):
      group = [v for v in meta["verify"] if v.get("same_environment", False) == same_env]
      if group:
        same = sum(v["identical"] for v in group)
        worst = max(v["max_relative_difference"] for v in group)
        final = max((0.0 if a == b else abs(a - b) / max(abs(a), 1e-30)
                     if math.isfinite(a) and math.isfinite(b) else float("inf")
                     for a, b in (v["final_loss"] for v in group)), default=0.0)
        lines.append(f"- {len(group)} runs {what}: {same} identical" + (
            "" if same == len(group) else
            f"; the others differ by at most {worst:.2g} (relative) in a curve point and "
            f"{final:.2g} in the final loss"))
    lines.append("")
  lines += ["## Summary", "", summary_markdown(results, meta), "## Per problem", ""]
  for name, res in results.items():
    per_spec, tuned = res["optimizers"], res["tuned"]
    metric_names = sorted(set().union(*(e["metrics"] for e in per_spec.values())))
    lines += [f"### {name}", "",
              f"| optimizer | loss @{h} (1x) | loss @{n} ({multiple}) | "
              f"grid points of Adam better (@{h} / @{n}) | "
              + " | ".join(metric_names) + (" | " if metric_names else "")
              + "steps to tuned Adam | wall s |",
              "|---|---|---|---|" + "---|" * len(metric_names) + "---|---|"]
    rows = [s for s in per_spec if not s.split(":")[0] in FAMILIES]
    rows += [s for s in [_adam_default(per_spec)] if s]
    for family, picks in tuned.items():
      rows += [picks["1x"]] + ([picks["10x"]] if picks["10x"] != picks["1x"] else [])
    seen = set()
    for spec in rows:
      if spec in seen:
        continue
      seen.add(spec)
      e = per_spec[spec]
      name_cell = e["label"]
      kind = spec.split(":")[0]
      if kind in tuned and spec in tuned[kind].values():
        steps_of = {"1x": meta["horizon"], "10x": meta["steps"]}
        which = [str(steps_of[tag]) for tag in ("1x", "10x") if tuned[kind][tag] == spec]
        name_cell += f" (tuned @{'/'.join(which)})"
      if kind not in FAMILIES:
        name_cell = f"**{name_cell}**"
      rank = (f"{grid_rank(per_spec, spec, 'adam', '1x')} / "
              f"{grid_rank(per_spec, spec, 'adam', '10x')}") if "adam" in tuned else "—"
      metrics = [_fmt(*e["metrics"][m]) if m in e["metrics"] else "—" for m in metric_names]
      diverged = f" (diverged {e['diverged']}/{len(meta['seeds'])})" if e["diverged"] else ""
      wall_std = e.get("wall_seconds_std")
      wall = f"{e['wall_seconds']:.1f}" + (
          f" ± {wall_std:.1f}" if wall_std is not None and math.isfinite(wall_std) else "")
      lines.append(f"| {name_cell}{diverged} | {_fmt(e['loss_1x'], e['loss_1x_std'])} | "
                   f"{_fmt(e['loss_10x'], e['loss_10x_std'])} | {rank} | "
                   + " | ".join(metrics) + (" | " if metrics else "")
                   + f"{_fmt_steps(e, len(meta['seeds']))} | {wall} |")
    lines.append("")
  return "\n".join(lines)


def plot(results, runs, seeds, path):
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  import numpy as np
  names = list(results)
  cols = min(4, len(names))
  rows = (len(names) + cols - 1) // cols
  fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.4 * rows), squeeze=False)
  for ax, name in zip(axes.flat, names):
    res = results[name]
    shown = [s for s in res["optimizers"] if s.split(":")[0] not in FAMILIES]
    shown += [_adam_default(res["optimizers"])]
    shown += [pick for picks in res["tuned"].values() for pick in (picks["10x"], picks["1x"])]
    for spec in dict.fromkeys(s for s in shown if s in res["optimizers"]):
      curves = [runs[(name, spec, seed)] for seed in seeds]
      # A diverged seed's curve stops early or holds NaN/Inf: it is left out from
      # there on (the label says how many diverged), not averaged in.
      length = max(len(r["curve"]) for r in curves)
      table = np.full([len(curves), length], np.nan)
      for i, r in enumerate(curves):
        table[i, :len(r["curve"])] = r["curve"]
      table[~np.isfinite(table)] = np.nan
      keep = np.isfinite(table).any(axis=0)
      if not keep.any():
        continue
      x = ((np.arange(length) + 1) * curves[0]["chunk"])[keep]
      with np.errstate(all="ignore"):
        mean = np.nanmean(table[:, keep], axis=0)
        low, high = np.nanmin(table[:, keep], axis=0), np.nanmax(table[:, keep], axis=0)
      entry = res["optimizers"][spec]
      tag = entry["label"] + (f" (diverged {entry['diverged']}/{len(seeds)})"
                              if entry["diverged"] else "")
      style = "-" if spec.split(":")[0] not in FAMILIES else "--"
      line, = ax.plot(x, mean, style, label=tag, linewidth=1.4)
      if len(seeds) > 1:  # the spread over seeds: min..max
        ax.fill_between(x, low, high, color=line.get_color(), alpha=0.15, linewidth=0)
    ax.set_yscale("log")
    ax.set_title(name)
    ax.set_xlabel("step")
    ax.set_ylabel("minibatch loss")
    ax.legend(fontsize=6)
  for ax in list(axes.flat)[len(names):]:
    ax.axis("off")
  fig.suptitle("Minibatch loss, mean over seeds " + str(list(seeds))
               + (" (band: min to max over seeds)" if len(seeds) > 1 else "")
               + "; solid: learned optimizers, dashed: Adam 1e-3 and tuned grid points",
               fontsize=10)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)
  return path


# ----------------------------------------------------------------- driver
def _pick_for_verify(cached, count, current=frozenset()):
  """Up to `count` cached (problem, spec, seed), deterministically: shuffled
  with a fixed seed, one of each optimizer kind in turn, alternately from the
  runs made in this environment (`current`) and the others."""
  import random
  rng = random.Random(0)
  pools = []
  for group in (sorted(k for k in cached if k in current),
                sorted(k for k in cached if k not in current)):
    by_kind = {}
    for key in group:
      by_kind.setdefault(key[1].split(":")[0], []).append(key)
    for keys in by_kind.values():
      rng.shuffle(keys)
    queues = [by_kind[kind] for kind in sorted(by_kind)]
    pools.append([k for turn in itertools.zip_longest(*queues) for k in turn if k])
  return [k for turn in itertools.zip_longest(*pools) for k in turn if k][:count]


def _max_relative_difference(a: dict, b: dict) -> float:
  """Largest relative difference between two runs' curves and metrics: 0 if
  they are identical (NaN matching NaN), inf if their shapes differ or one is
  finite where the other is not."""
  if len(a["curve"]) != len(b["curve"]) or set(a["metrics"]) != set(b["metrics"]):
    return float("inf")
  pairs = list(zip(a["curve"], b["curve"])) + [(a["metrics"][m], b["metrics"][m])
                                                for m in a["metrics"]]
  worst = 0.0
  for x, y in pairs:
    if math.isnan(x) and math.isnan(y) or x == y:
      continue
    if not (math.isfinite(x) and math.isfinite(y)):
      return float("inf")
    worst = max(worst, abs(x - y) / max(abs(x), 1e-30))
  return worst


def verify_runs(picks, runs, steps, horizon, points, jit_compile, env, log=print):
  """Re-runs cached runs; each must give the same curve and metrics as cached.
  `env`: this process's environment()."""
  report = []
  for name, spec, seed in picks:
    cached = runs[(name, spec, seed)]
    fresh = train_run(name, spec, steps, seed, points, jit_compile, horizon)
    diff = _max_relative_difference(cached, fresh)
    identical = diff == 0.0
    report.append({"problem": name, "optimizer": spec, "seed": seed, "identical": identical,
                   "max_relative_difference": diff,
                   "same_environment": cached.get("environment") == env,
                   "final_loss": [cached["losses_at"][str(steps)],
                                  fresh["losses_at"][str(steps)]]})
    log(f"verify {name:15s} {label(spec):22s} seed {seed}: "
        + ("identical" if identical else f"differs (max relative difference {diff:.2e})")
        + f"; cached run's environment: {_environment_id(cached.get('environment'))}")
  return report


def run_benchmark(problem_names, specs, seeds, steps, horizon, out_dir=None, points=100,
                  jit_compile=False, log=print, command="", verify=0):
  """Runs what is missing from out_dir/runs.json, aggregates, writes outputs.
  With verify > 0, first re-runs that many cached runs and reports whether
  they come out the same (they should, bit for bit: fixed seeds, deterministic
  ops)."""
  import tensorflow as tf
  from benchmarks import problems
  tf.config.experimental.enable_op_determinism()
  for name in problem_names:
    if name not in problems.PROBLEMS:
      raise ValueError(f"unknown problem {name!r}; known: {list(problems.PROBLEMS)}")
  if horizon <= 0 or steps % horizon or steps % points or steps < 10:
    raise ValueError(f"need 0 < horizon ({horizon}) dividing steps ({steps}), steps >= 10 "
                     f"and a multiple of the curve points ({points})")
  for spec in specs:
    make_optimizer(spec)  # bad specs fail before anything runs
  cache_path = os.path.join(out_dir, "runs.json") if out_dir else None
  cache = {}
  if cache_path and os.path.exists(cache_path):
    with open(cache_path) as f:
      cache = json.load(f)
  versions = {spec: spec_version(spec) for spec in specs}
  code = code_version()
  runs, todo = {}, []
  for name in problem_names:
    for spec in specs:
      for seed in seeds:
        key = (f"{name}|{versions[spec]}|{steps}|{horizon}|{points}|{seed}|"
               f"xla={int(jit_compile)}|code={code}")
        if key in cache:
          runs[(name, spec, seed)] = cache[key]
        else:
          todo.append((key, name, spec, seed))
  log(f"{len(runs)} runs cached, {len(todo)} to do")
  env = environment()
  current = {k for k, run in runs.items() if run.get("environment") == env}
  verified = verify_runs(_pick_for_verify(list(runs), verify, current), runs, steps, horizon,
                         points, jit_compile, env, log) if verify else []
  started = time.time()
  for i, (key, name, spec, seed) in enumerate(todo):
    run = train_run(name, spec, steps, seed, points, jit_compile, horizon)
    run["environment"] = env
    runs[(name, spec, seed)] = cache[key] = run
    elapsed = time.time() - started
    eta = elapsed / (i + 1) * (len(todo) - i - 1)
    log(f"[{i + 1}/{len(todo)}] {name:15s} {label(spec):22s} seed {seed}: loss@{horizon} "
        f"{_fmt(run['losses_at'][str(horizon)])}  loss@{steps} "
        f"{_fmt(run['losses_at'][str(steps)])}  {run['wall_seconds']:.0f}s  "
        f"ETA {eta / 60:.1f} min")
    if cache_path:
      os.makedirs(out_dir, exist_ok=True)
      with open(cache_path + ".tmp", "w") as f:
        json.dump(cache, f)
      os.replace(cache_path + ".tmp", cache_path)
  results = aggregate(runs, problem_names, specs, seeds, steps, horizon)
  meta = {"date": datetime.date.today().isoformat(),
          "machine": f"{platform.machine()}, {os.cpu_count()} cores, "
                     f"Python {platform.python_version()}",
          "command": command, "seeds": list(seeds), "steps": steps, "horizon": horizon,
          "grid": sorted({float(s.split(":")[1]) for s in specs
                          if s.split(":")[0] in FAMILIES}),
          "versions": versions, "xla": jit_compile, "environment": env,
          "environments": _count_environments(runs.values())}
  if verified:
    meta["verify"] = verified
  if out_dir:
    os.makedirs(out_dir, exist_ok=True)
    from mnemosyne_tf import strict_json
    with open(os.path.join(out_dir, "results.json"), "w") as f:
      json.dump(strict_json.strict({"meta": meta, "results": results},
                                    non_finite_as_string=True), f, indent=1, allow_nan=False)
    with open(os.path.join(out_dir, "results.md"), "w") as f:
      f.write(markdown(results, meta) + "\n")
    plot(results, runs, seeds, os.path.join(out_dir, "curves.png"))
    log(f"wrote {out_dir}/results.{{json,md}} and curves.png")
  return results, runs, meta


def _count_environments(runs):
  counts = {}
  for run in runs:
    env = _environment_id(run.get("environment"))
    counts[env] = counts.get(env, 0) + 1
  return dict(sorted(counts.items(), key=lambda kv: -kv[1]))


def define_flags():
  flags.DEFINE_bool("quick", False, "The quick benchmark: 1 seed, Adam on a 3-point grid "
                    "(RMSProp and SGD-momentum only in the full run), 400 steps (1x and 2x "
                    "the meta-training horizon); under 10 minutes.")
  flags.DEFINE_list("problems", None, "Problems (default: all of benchmarks/problems.py).")
  flags.DEFINE_list("optimizers", None, "Optimizer specs (default: every mode, LSTM, grids).")
  flags.DEFINE_list("seeds", None, "Seeds (default 0,1,2; --quick: 0).")
  flags.DEFINE_integer("steps", None, "Steps per run (default 2000 = 10x; --quick: 400).")
  flags.DEFINE_integer("horizon", 200, "The meta-training horizon (1x).")
  flags.DEFINE_string("lstm_weights", LSTM_WEIGHTS, "The LSTM baseline's weights.")
  flags.DEFINE_string("out_dir", None, "Outputs (default benchmarks/results/quality[_quick]).")
  flags.DEFINE_bool("jit_compile", False, "Compile the training steps with XLA.")
  flags.DEFINE_integer("verify", 0, "Re-run this many cached runs first (spread over "
                       "optimizer kinds) and report whether they reproduce exactly.")


def main(argv):
  del argv
  from benchmarks import problems
  import tensorflow as tf
  f = flags.FLAGS
  tf.config.experimental.enable_op_determinism()
  quick = f.quick
  steps = f.steps or (400 if quick else 2000)
  horizon = f.horizon
  seeds = [int(s) for s in (f.seeds or (["0"] if quick else ["0", "1", "2"]))]
  specs = f.optimizers or (optimizer_specs(QUICK_GRID, f.lstm_weights, families=("adam",))
                           if quick else optimizer_specs(FULL_GRID, f.lstm_weights))
  out_dir = f.out_dir or os.path.join(os.path.dirname(os.path.abspath(__file__)), "results",
                                      "quality_quick" if quick else "quality")
  names = f.problems or list(problems.PROBLEMS)
  command = "python -m benchmarks.quality " + " ".join(sys.argv[1:])
  print(f"{len(names)} problems x {len(specs)} optimizers x {len(seeds)} seeds, "
        f"{steps} steps (1x = {horizon}) -> {out_dir}", flush=True)
  results, _, meta = run_benchmark(names, specs, seeds, steps, horizon, out_dir,
                                   jit_compile=f.jit_compile,
                                   log=lambda line: print(line, flush=True), command=command,
                                   verify=f.verify)
  print(markdown(results, meta))


if __name__ == "__main__":
  define_flags()
  app.run(main)
