r"""Held-out evaluation of learned optimizers against Adam and its learning-rate grid.

    python -m mnemosyne_tf.meta.evaluate --weights=coordinate_v1[,coordinate_v2] \
        [--lstm_weights=lstm_v1] [--steps=2000] [--out_dir=...]

Every optimizer trains every held-out task (tasks.HELD_OUT, or with --tasks
also tasks.HELD_OUT_FRESH and tasks.HELD_OUT_CONFIRM: never used in meta-training) from the same
initialization on the same batches (stateless seeds), through ordinary Keras optimizers (`Mnemosyne(weights=...)`,
`LearnedOptimizer(weights=...)` for the LSTM, `keras.optimizers.Adam`). The
figure is the final training loss: the loss on the whole training set after
`horizon` steps (1x the meta-training horizon) and after `steps` (10x). A run
diverges if its loss becomes NaN/Inf or ends above its starting loss.
"""

import json
import math
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app  # noqa: E402
from absl import flags  # noqa: E402


def parse_weights(arg: str):
  """'<weights>[+field=value...]' -> (weights, network config overrides), e.g.
  'super_v1+small_mode=coordinate' (Super-Mnemosyne with the reverse policy).
  A path to an existing file is taken whole, even if it contains '+'; values
  'true'/'false' become booleans, numbers become int or float."""
  if os.path.exists(arg):
    return arg, {}
  name, *pairs = arg.split("+")
  overrides = {}
  for pair in pairs:
    field, sep, value = pair.partition("=")
    if not sep or not field:
      raise ValueError(f"{arg!r}: expected <weights>+field=value, got {pair!r}")
    overrides[field] = _parse_value(value)
  return name, overrides


def _parse_value(value: str):
  if value.lower() in ("true", "false"):
    return value.lower() == "true"
  for convert in (int, float):
    try:
      return convert(value)
    except ValueError:
      pass
  return value


def make_optimizer(spec: str):
  """'mnemosyne:<weights>[+field=value...]', 'learned:<weights>' or 'adam:<lr>' -> a
  Keras optimizer."""
  import keras
  import mnemosyne_tf
  kind, _, arg = spec.partition(":")
  if kind in ("mnemosyne", "learned"):
    weights, overrides = parse_weights(arg)
    return mnemosyne_tf.LearnedOptimizer(weights=weights, network_overrides=overrides or None)
  if kind == "adam":
    try:
      lr = float(arg)
    except ValueError:
      lr = math.nan
    if not 0 < lr < math.inf:
      raise ValueError(f"optimizer spec {spec!r}: Adam's learning rate must be a number > 0")
    return keras.optimizers.Adam(lr)
  raise ValueError(f"unknown optimizer spec {spec!r}")


def train_curve(task, optimizer_spec, steps: int, seed: int, record_every: int,
                jit_compile: bool = False, scale_of=None, after_update=None):
  """Trains `task` with a fresh optimizer; whole-training-set loss every
  `record_every` steps (and at 0). Returns {"steps": [...], "loss": [...]}.

  `optimizer_spec` is a `make_optimizer` spec, or a function that returns a
  fresh Keras optimizer. `scale_of` (optional, for
  benchmarks/tensor_steps.py) maps a variable's path to a factor: each step's
  change of that variable is multiplied by it (the optimizer's state does not
  see it); the curve then also has "scaled": {path: factor} for the factors
  that are not 1. `after_update` (optional) is called in the traced loop
  after every step as after_update(variables, grads, before), `before` the
  variables' values before the step."""
  import keras
  import tensorflow as tf
  from mnemosyne_tf.meta import tasks as tasks_lib
  keras.utils.set_random_seed(seed)
  model = tasks_lib.build_model(task.spec, task.x.shape[1:], task.num_classes)
  variables = model.trainable_variables
  for var, value in zip(variables, task.init_params(seed)):
    var.assign(value)
  optimizer = (make_optimizer(optimizer_spec) if isinstance(optimizer_spec, str)
               else optimizer_spec())
  optimizer.build(variables)
  keras_loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
  masked = task.spec.model == "mlm"

  def loss_fn(y, x):
    """The task's loss on (x, y) (a masked LM's: over its masked tokens)."""
    if masked:
      return task.masked_mean(keras.losses.sparse_categorical_crossentropy(
          y, model(x), from_logits=True), x)
    return keras_loss(y, model(x))

  factors = [scale_of(v.path) if scale_of else 1.0 for v in variables]

  @tf.function(jit_compile=jit_compile)
  def run_chunk(first_step):
    for i in tf.range(record_every):
      step = tf.cast(first_step, tf.int32) + i
      index = tf.random.stateless_uniform([task.spec.batch_size], [seed, step],
                                          maxval=task.size, dtype=tf.int32)
      x, y = tf.gather(task.x, index), tf.gather(task.y, index)
      if masked:  # masks drawn afresh per batch, as in Task.batches
        x = task.mask(y, tf.random.experimental.stateless_fold_in([seed, step], 1))
      with tf.GradientTape() as tape:
        loss = loss_fn(y, x)
      grads = tape.gradient(loss, variables)
      before = [tf.identity(v) if f != 1.0 or after_update else None
                for v, f in zip(variables, factors)]
      optimizer.apply_gradients(zip(grads, variables))
      for var, old, factor in zip(variables, before, factors):
        if factor != 1.0:
          var.assign(old + factor * (var - old))
      if after_update:
        after_update(variables, grads, before)
    return loss_fn(task.y, task.x)

  curve = {"steps": [0], "loss": [float(loss_fn(task.y, task.x))]}
  if scale_of:
    curve["scaled"] = {v.path: f for v, f in zip(variables, factors) if f != 1.0}
  for first in range(0, steps, record_every):
    loss = float(run_chunk(tf.constant(first, tf.int32)))
    curve["steps"].append(first + record_every)
    curve["loss"].append(loss)
    if not math.isfinite(loss):
      break
  return curve


def diverged(curve) -> bool:
  return any(not math.isfinite(l) for l in curve["loss"]) or curve["loss"][-1] > curve["loss"][0]


def loss_at(curve, step):
  """Whole-set loss recorded at `step`; inf if it is not finite or the run
  ended earlier (diverged), so that a diverged run compares as the worst."""
  for s, l in zip(curve["steps"], curve["loss"]):
    if s == step:
      return l if math.isfinite(l) else float("inf")
  return float("inf")


def run_key(task_name: str, spec: str, steps: int, seed: int, jit_compile: bool = False) -> str:
  """Identifies a run; learned optimizers by their weights' checksum. XLA runs
  are keyed apart: their float rounding differs, and over thousands of steps
  the trajectories of an optimizer that does not anneal drift apart."""
  kind, _, arg = spec.partition(":")
  version = behaviour_version(arg) if kind != "adam" else arg
  return f"{task_name}|{kind}:{version}|{steps}|{seed}" + ("|xla" if jit_compile else "")


def behaviour_version(arg: str) -> str:
  """What fixes a learned optimizer's behaviour: its theta's checksum and its
  network config (with any overrides; two configs can share one theta)."""
  import hashlib
  from mnemosyne_tf import rule
  from mnemosyne_tf import weights as weights_lib
  name, overrides = parse_weights(arg)
  loaded = weights_lib.load_weights(name)
  config = rule.build_network(loaded.network, dict(loaded.config, **overrides)).config
  digest = hashlib.sha256(json.dumps(config.to_dict(), sort_keys=True).encode()).hexdigest()
  return f"{loaded.sha256[:16]}-{digest[:8]}"


def runs_of(evaluation: dict, jit_compile: bool = False) -> dict:
  """The run cache (run_key -> curve) behind an earlier `evaluation.json`.

  Its runs are reused as they are: a run is a deterministic function of its
  key (task, optimizer and its weights' checksum, steps, seed, XLA). The runs
  of learned optimizers whose weights file is gone (a deleted workdir) have
  no checksum to key them by and are left out.
  """
  from mnemosyne_tf import weights as weights_lib
  steps, seed = evaluation["steps"], evaluation["seed"]

  def key(task, label, length):
    try:
      return run_key(task, evaluation["optimizers"][label], length, seed, jit_compile)
    except weights_lib.WeightsError:
      return None

  runs = {}
  for task, curves in evaluation["results"].items():
    for label, curve in curves.items():
      runs[key(task, label, steps)] = curve
  for label, curve in evaluation.get("stability_curves", {}).items():
    # Stability runs on digits_mlp_32_relu; a complete run ends at its length.
    runs[key("digits_mlp_32_relu", label, curve["steps"][-1])] = curve
  runs.pop(None, None)
  return runs


def evaluate(optimizers: dict, task_names, steps: int, horizon: int, seed: int, log=print,
             jit_compile: bool = False, cache: dict = None, save=None):
  """{task: {optimizer label: curve}} for every task and optimizer.

  `cache` (run_key -> curve) is read and filled: runs already in it are reused
  (runs are deterministic), so adding one optimizer re-runs only its rows;
  `save(cache)` is called after every new run (an interrupted evaluation keeps
  what it finished).
  """
  from mnemosyne_tf.meta import tasks as tasks_lib
  cache = {} if cache is None else cache
  results = {}
  for name in task_names:
    task = None
    results[name] = {}
    for label, spec in optimizers.items():
      key = run_key(name, spec, steps, seed, jit_compile)
      if key not in cache:
        task = task or tasks_lib.Task(tasks_lib.get_spec(name))
        cache[key] = train_curve(task, spec, steps, seed,
                                 record_every=min(horizon, steps) // 4, jit_compile=jit_compile)
        if save:
          save(cache)
      curve = results[name][label] = cache[key]
      log(f"  {name:28s} {label:22s} loss@{horizon} {loss_at(curve, horizon):.4f}  "
          f"loss@{steps} {loss_at(curve, steps):.4f}" + ("  DIVERGED" if diverged(curve) else ""))
  return results


def summarize(results, horizon, steps, learned_labels):
  """Markdown table and the verdicts the meta-training issue asks for."""
  lines = [f"| task | optimizer | loss @ {horizon} (1x) | loss @ {steps} (10x) | "
           "grid points of Adam better (1x / 10x) |", "|---|---|---|---|---|"]
  verdicts = {}
  for task, runs in results.items():
    grid = {label: curve for label, curve in runs.items() if label.startswith("adam ")}
    best = {h: min(loss_at(c, h) for c in grid.values()) for h in (horizon, steps)}
    for label, curve in runs.items():
      better = [sum(loss_at(c, h) < loss_at(curve, h) for c in grid.values())
                for h in (horizon, steps)]
      lines.append(f"| {task} | {label} | {loss_at(curve, horizon):.4f} | "
                   f"{loss_at(curve, steps):.4f} | {better[0]} / {better[1]} |"
                   + (" diverged" if diverged(curve) else ""))
      if label in learned_labels:
        verdicts.setdefault(label, {})[task] = {
            "beats_adam_1e-3": [loss_at(curve, h) < loss_at(runs["adam 0.001"], h)
                                for h in (horizon, steps)],
            "grid_points_better": better,
            "best_grid_loss": [best[horizon], best[steps]],
            "diverged": diverged(curve)}
  return "\n".join(lines), verdicts


def plot(results, path, horizon):
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  fig, axes = plt.subplots(1, len(results), figsize=(5 * len(results), 4), squeeze=False)
  for ax, (task, runs) in zip(axes[0], results.items()):
    for i, (label, curve) in enumerate(runs.items()):
      adam = label.startswith("adam ")
      ax.plot(curve["steps"], curve["loss"], lw=1 if adam else 2,
              alpha=0.5 if adam else 1.0, ls="--" if adam else "-", label=label)
    ax.axvline(horizon, color="gray", lw=0.5)
    ax.set(yscale="log", title=task, xlabel="step", ylabel="training-set loss")
    ax.grid(alpha=0.3)
  axes[0][-1].legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)


def define_flags():
  """Defines this binary's flags (only when it runs as a binary)."""
  flags.DEFINE_list("weights", ["coordinate_v1"],
                    "Mnemosyne weights to evaluate (shipped names or paths, comma-separated).")
  flags.DEFINE_string("lstm_weights", None, "LSTM baseline weights (name or path).")
  flags.DEFINE_bool("hand_set", True, "Also evaluate hand_set_v0.")
  flags.DEFINE_integer("steps", 2000, "Steps per run (10x the horizon).")
  flags.DEFINE_integer("horizon", 200, "The meta-training horizon (1x).")
  flags.DEFINE_integer("seed", 0, "Initialization and batch seed.")
  flags.DEFINE_list("tasks", None, "Held-out tasks to run (default: all of tasks.HELD_OUT; "
                    "those of tasks.HELD_OUT_FRESH and HELD_OUT_CONFIRM are "
                    "run when named).")
  flags.DEFINE_integer("long_steps", 10000,
                                     "Steps of the stability run on digits_mlp_32_relu.")
  flags.DEFINE_string("out_dir", None, "Where to write evaluation.{json,md,png}.")
  flags.DEFINE_list("reuse", [],
                    "evaluation.json files of earlier runs with the same --jit_compile "
                    "setting: their runs are reused instead of repeated.")
  flags.DEFINE_bool("jit_compile", False,
                           "Compile each run with XLA (faster steps, a compile per run).")

def main(argv):
  del argv
  from absl import logging
  logging.set_verbosity(logging.ERROR)  # one tf.function per run: retracing is expected
  from mnemosyne_tf.meta import tasks as tasks_lib
  optimizers = {"mnemosyne " + w: "mnemosyne:" + w for w in flags.FLAGS.weights}
  if flags.FLAGS.hand_set:
    optimizers["mnemosyne hand_set_v0"] = "mnemosyne:hand_set_v0"
  if flags.FLAGS.lstm_weights:
    optimizers["lstm " + os.path.basename(flags.FLAGS.lstm_weights)] = (
        "learned:" + flags.FLAGS.lstm_weights)
  optimizers.update({f"adam {lr:g}": f"adam:{lr}" for lr in tasks_lib.ADAM_GRID})
  learned = [k for k in optimizers if not k.startswith("adam ")]
  print(f"held-out tasks, {flags.FLAGS.steps} steps, seed {flags.FLAGS.seed}:", flush=True)
  cache_path = os.path.join(flags.FLAGS.out_dir, "runs.json") if flags.FLAGS.out_dir else None
  cache = {}
  if cache_path and os.path.exists(cache_path):
    with open(cache_path) as f:
      cache = json.load(f)
  for path in flags.FLAGS.reuse:
    with open(path) as f:
      evaluation = json.load(f)
    missing = [k for k in ("steps", "seed", "optimizers", "results")
               if not isinstance(evaluation, dict) or k not in evaluation]
    if missing:
      raise app.UsageError(f"--reuse: {path} is not an evaluation.json (no {missing}); "
                           "pass the evaluation.json of an earlier --out_dir")
    reused = runs_of(evaluation, flags.FLAGS.jit_compile)
    print(f"reusing {len(reused)} runs of {path}", flush=True)
    cache = dict(reused, **cache)

  def save(runs):
    if cache_path:
      os.makedirs(flags.FLAGS.out_dir, exist_ok=True)
      with open(cache_path + ".tmp", "w") as f:
        json.dump(runs, f)
      os.replace(cache_path + ".tmp", cache_path)

  held_out = [s.name for s in tasks_lib.ALL_HELD_OUT]
  names = flags.FLAGS.tasks or [s.name for s in tasks_lib.HELD_OUT]
  for name in names:
    if name not in held_out:
      raise app.UsageError(f"--tasks: {name!r} is not a held-out task ({held_out})")
  results = evaluate(optimizers, names, flags.FLAGS.steps,
                     flags.FLAGS.horizon, flags.FLAGS.seed, log=lambda l: print(l, flush=True),
                     jit_compile=flags.FLAGS.jit_compile, cache=cache, save=save)
  table, verdicts = summarize(results, flags.FLAGS.horizon, flags.FLAGS.steps, learned)
  print(f"stability: {flags.FLAGS.long_steps} steps on digits_mlp_32_relu", flush=True)
  long_task = tasks_lib.Task(tasks_lib.get_spec("digits_mlp_32_relu"))
  long_runs = {}
  for label in learned:
    key = run_key(long_task.spec.name, optimizers[label], flags.FLAGS.long_steps,
                  flags.FLAGS.seed, flags.FLAGS.jit_compile)
    if key not in cache:
      cache[key] = train_curve(long_task, optimizers[label], flags.FLAGS.long_steps,
                               flags.FLAGS.seed, record_every=flags.FLAGS.long_steps // 20,
                               jit_compile=flags.FLAGS.jit_compile)
    long_runs[label] = cache[key]
    save(cache)
  stability = {label: {"final_loss": c["loss"][-1], "start_loss": c["loss"][0],
                       "diverged": diverged(c)} for label, c in long_runs.items()}
  print("\n" + table)
  for label, s in stability.items():
    print(f"{label}: {flags.FLAGS.long_steps} steps on digits_mlp_32_relu: loss {s['start_loss']:.4f}"
          f" -> {s['final_loss']:.4f}" + (" DIVERGED" if s["diverged"] else ""))
  if flags.FLAGS.out_dir:
    os.makedirs(flags.FLAGS.out_dir, exist_ok=True)
    with open(os.path.join(flags.FLAGS.out_dir, "evaluation.json"), "w") as f:
      json.dump({"steps": flags.FLAGS.steps, "horizon": flags.FLAGS.horizon, "seed": flags.FLAGS.seed,
                 "optimizers": optimizers, "results": results, "verdicts": verdicts,
                 "stability": stability, "stability_curves": long_runs}, f)
    with open(os.path.join(flags.FLAGS.out_dir, "evaluation.md"), "w") as f:
      f.write(table + "\n")
    plot(results, os.path.join(flags.FLAGS.out_dir, "evaluation.png"), flags.FLAGS.horizon)
    print(f"wrote {flags.FLAGS.out_dir}/evaluation.{{json,md,png}}")


if __name__ == "__main__":
  define_flags()
  app.run(main)
