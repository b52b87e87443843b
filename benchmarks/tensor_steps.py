"""Which of a model's tensors limit the step size a learned rule can take.

    python -m benchmarks.tensor_steps --weights=<weights>[+field=value...] \
        --task=stdlib_clm_64 --multiplier=4 \
        --variant=all= '--variant=attention=attention*0.25' \
        '--variant=rest=dense*0.25,attention*0.25,layer_norm*0.25' \
        [--steps=2000] [--seed=1] [--out_dir=...]

(Quote the variants: `*` is a shell wildcard.)

A learned rule has one base step for every tensor (times what it adapts per
tensor). When a task stalls at a step where others train fine, this tells
which tensors are responsible: each `--variant` trains the task from the same
initialization on the same batches with the rule's step multiplied by
`--multiplier` (the optimizer's learning_rate), and the update of every tensor whose path contains one of the
variant's substrings further multiplied by that substring's factor
(`substring*factor`, comma-separated; the first match counts; an empty spec
scales nothing; a substring that matches no tensor is an error). Paths carry
Keras's layer numbering (dense, dense_1, ...; the same in every variant), so
`dense_1` also matches `dense_10`: the stable parts are the safer match
(attention, query, dense, layer_normalization, embedding). The rule itself runs unchanged, as the Keras optimizer users
get (`mnemosyne_tf.LearnedOptimizer`): its state sees the unscaled update, and
the scale is applied to the change it makes to the variable. So a variant
with every factor 1 is `mnemosyne_tf.meta.evaluate`'s run of the rule: the
same initialization, batches and updates (the losses agree to 1e-6 relative
in tests/bench_tensor_steps_test.py).

Printed and written to `--out_dir` (JSON and a markdown table): the
whole-training-set loss every `--steps`/10 steps of every variant; with
`--stats` also, per tensor, `TensorStats` (the means of the step
adaptation's agreement signal, of the cosine of consecutive gradients, of the
relative update size and of the update's cosine with the tensor, and the
tensor's norm ratio over the run), to look for what tells tensors apart. Only
meta-training tasks are accepted: this is a tool for design decisions, which
the held-out tasks must not inform.
"""

import json
import math
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app  # noqa: E402
from absl import flags  # noqa: E402


def parse_scales(spec: str):
  """'attention*0.25,dense*0.5' -> [("attention", 0.25), ("dense", 0.5)];
  '' -> []. ValueError names the bad part."""
  scales = []
  for part in filter(None, (p.strip() for p in spec.split(","))):
    name, sep, factor = part.rpartition("*")
    try:
      value = float(factor)
    except ValueError:
      value = math.nan
    if not sep or not name or not math.isfinite(value) or value < 0:
      raise ValueError(f"expected substring*factor with a factor >= 0, got {part!r}")
    scales.append((name, value))
  return scales


def parse_variant(arg: str):
  """'label=spec' -> (label, scales)."""
  label, sep, spec = arg.partition("=")
  if not sep or not label:
    raise ValueError(f"--variant: expected label=substring*factor,..., got {arg!r}")
  return label, parse_scales(spec)


def factor_of(path: str, scales) -> float:
  for name, value in scales:
    if name in path:
      return value
  return 1.0


class TensorStats:
  """Per-tensor statistics of a run, accumulated in the traced loop (an
  `after_update` of evaluate.train_curve). With g_t a tensor's gradient at
  step t and u_t its change in that step (after any scale):
    agreement:       mean over t >= 2 of cos(g_t, -u_{t-1}): > 0 while the
                     new gradient still points along the last move (the step
                     adaptation's signal, core/step_adaptation.py), < 0 when
                     the move overshot;
    gradient_cos:    mean over t >= 2 of cos(g_t, g_{t-1}): near 0 when the
                     minibatch noise dominates the gradient;
    relative_update: mean over t of |u_t| / |p_{t-1}|;
    radial:          mean over t of cos(u_t, p_{t-1}): > 0 while the moves
                     grow the tensor's norm (attention logits grow with the
                     norms of the query and key kernels), about 0 for moves
                     across it;
    norm_ratio:      |p_T| / |p_0| at the end of the run (0 for a tensor
                     that starts at 0).
  The cosines are the step adaptation's own (`step_adaptation.agreement`,
  exact to about 1e-9 per coordinate); with a zero vector they are 0, and so
  is the relative update of a zero tensor (a bias at its initial 0)."""

  NAMES = ("agreement", "gradient_cos", "relative_update", "radial", "norm_ratio")

  def __init__(self):
    self._state = None

  def __call__(self, variables, grads, before):
    import tensorflow as tf
    if self._state is None:
      with tf.init_scope():  # created once, outside the traced function
        self._state = (
            tf.Variable(tf.zeros([len(variables), 4]), trainable=False),
            tf.Variable(0, trainable=False),
            [tf.Variable(tf.zeros([v.shape.num_elements()]), trainable=False)
             for v in variables],
            [tf.Variable(tf.zeros([v.shape.num_elements()]), trainable=False)
             for v in variables],
            tf.Variable(tf.zeros([len(variables), 2]), trainable=False))  # |p_0|, |p_t|
    from mnemosyne_tf.core import step_adaptation
    cos = step_adaptation.agreement  # the rule's own cosine (0 with a zero vector)
    sums, count, previous_grads, previous_updates, norms = self._state
    rows, norm_rows = [], []
    for var, grad, old, previous_grad, previous_update in zip(
        variables, grads, before, previous_grads, previous_updates):
      g = tf.reshape(tf.cast(tf.convert_to_tensor(grad), tf.float32), [-1])
      old = tf.reshape(tf.cast(old, tf.float32), [-1])
      u = tf.reshape(tf.cast(var, tf.float32), [-1]) - old
      rows.append(tf.stack([cos(g, -previous_update), cos(g, previous_grad),
                            tf.math.divide_no_nan(tf.norm(u), tf.norm(old)), cos(u, old)]))
      norm_rows.append(tf.stack([tf.norm(old), tf.norm(old + u)]))
      previous_grad.assign(g)
      previous_update.assign(u)
    sums.assign_add(tf.stack(rows))
    norm_rows = tf.stack(norm_rows)
    norms.assign(tf.where(tf.equal(count, 0), norm_rows, tf.stack([norms[:, 0], norm_rows[:, 1]], 1)))
    count.assign_add(1)

  def summary(self, paths) -> dict:
    """{path: {name: mean}} (after a run of at least 2 steps)."""
    sums, count = self._state[0].numpy(), int(self._state[1].numpy())
    norms = self._state[4].numpy()
    return {path: {"agreement": float(row[0] / (count - 1)),
                   "gradient_cos": float(row[1] / (count - 1)),
                   "relative_update": float(row[2] / count),
                   "radial": float(row[3] / count),
                   "norm_ratio": float(first_last[1] / first_last[0]) if first_last[0] else 0.0}
            for path, row, first_last in zip(paths, sums, norms)}


def run(task, weights: str, scales, multiplier: float, steps: int, seed: int,
        record_every: int, stats: bool = False):
  """`evaluate.train_curve` (the same initialization, batches and loss) with
  the rule of `weights` ('<weights>[+field=value...]') at learning_rate
  `multiplier` (the rule's step times it) and its updates scaled per tensor
  by `scales`. Returns {"steps", "loss", "scaled": {path: factor}}, and with
  `stats` "tensors": `TensorStats.summary`; ValueError if a substring of
  `scales` matches no tensor."""
  import keras
  import mnemosyne_tf
  from mnemosyne_tf.meta import evaluate
  from mnemosyne_tf.meta import tasks as tasks_lib
  keras.backend.clear_session()  # layer names restart: the same paths in every variant
  paths = [v.path for v in tasks_lib.build_model(task.spec, task.x.shape[1:],
                                                 task.num_classes).trainable_variables]
  unmatched = [name for name, _ in scales if not any(name in path for path in paths)]
  if unmatched:
    raise ValueError(f"no tensor of {task.spec.name} has {unmatched} in its path; "
                     f"paths: {paths}")
  keras.backend.clear_session()  # the run's model gets the paths just checked
  name, overrides = evaluate.parse_weights(weights)
  observer = TensorStats() if stats else None
  curve = evaluate.train_curve(
      task, lambda: mnemosyne_tf.LearnedOptimizer(
          weights=name, network_overrides=overrides or None, learning_rate=multiplier),
      steps, seed, record_every, scale_of=lambda path: factor_of(path, scales),
      after_update=observer)
  if observer:
    curve["tensors"] = observer.summary(paths)
  return curve


def to_markdown(curves: dict, header: str) -> str:
  steps = max((c["steps"] for c in curves.values()), key=len)
  lines = [header, "", "| variant | " + " | ".join(str(s) for s in steps[1:]) + " |",
           "|---|" + "---|" * (len(steps) - 1)]
  for label, curve in curves.items():
    cells = [f"{l:.4g}" for l in curve["loss"][1:]]
    cells += ["diverged"] * (len(steps) - 1 - len(cells))
    lines.append(f"| {label} | " + " | ".join(cells) + " |")
  for label, curve in curves.items():
    if "tensors" in curve:
      lines += ["", f"Per-tensor means, variant {label} (TensorStats):", "",
                "| tensor | " + " | ".join(TensorStats.NAMES) + " |",
                "|---|" + "---|" * len(TensorStats.NAMES)]
      lines += [f"| {path} | " + " | ".join(f"{row[n]:.3g}" for n in TensorStats.NAMES) + " |"
                for path, row in curve["tensors"].items()]
  return "\n".join(lines) + "\n"


def define_flags():
  flags.DEFINE_string("weights", None, "Learned-optimizer weights (name or path, optionally "
                      "+field=value network overrides).", required=True)
  flags.DEFINE_string("task", "stdlib_clm_64", "A meta-training task (tasks.META_TRAIN).")
  flags.DEFINE_float("multiplier", 1.0, "Multiplier of the rule's step for every tensor.")
  flags.DEFINE_multi_string("variant", ["all="], "label=substring*factor,... (repeatable).")
  flags.DEFINE_integer("steps", 2000, "Training steps per variant.")
  flags.DEFINE_integer("seed", 1, "Initialization and batch seed.")
  flags.DEFINE_string("out_dir", None, "Where to write tensor_steps.{json,md}.")
  flags.DEFINE_bool("stats", False, "Also report per-tensor statistics (TensorStats).")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  f = flags.FLAGS
  from mnemosyne_tf.meta import tasks as tasks_lib
  train_names = [s.name for s in tasks_lib.META_TRAIN]
  if f.task not in train_names:
    raise app.UsageError(f"--task: {f.task!r} is not a meta-training task ({train_names}); "
                         "held-out tasks must not inform design decisions")
  if not (f.multiplier > 0 and math.isfinite(f.multiplier)) or f.steps < 10 or f.steps % 10:
    raise app.UsageError("need --multiplier > 0 and --steps a positive multiple of 10")
  try:
    variants = dict(parse_variant(v) for v in f.variant)
  except ValueError as e:
    raise app.UsageError(str(e))
  if len(variants) != len(f.variant):
    raise app.UsageError("--variant: every label must be different")
  task = tasks_lib.Task(tasks_lib.get_spec(f.task))
  curves = {}
  for label, scales in variants.items():
    try:
      curves[label] = run(task, f.weights, scales, f.multiplier, f.steps, f.seed, f.steps // 10,
                          stats=f.stats)
    except ValueError as e:
      raise app.UsageError(f"--variant={label}=...: {e}")
    print(f"{label}: loss " + " ".join(f"{l:.4g}" for l in curves[label]["loss"]) +
          f"  (scaled: {len(curves[label]['scaled'])} tensors)", flush=True)
  header = (f"Whole-set loss of {f.task} trained by {f.weights} at x{f.multiplier:g} its "
            f"step, seed {f.seed}, per variant (tensor update scales):")
  table = to_markdown(curves, header)
  print("\n" + table)
  if f.out_dir:
    os.makedirs(f.out_dir, exist_ok=True)
    with open(os.path.join(f.out_dir, "tensor_steps.json"), "w") as out:
      json.dump({"weights": f.weights, "task": f.task, "multiplier": f.multiplier,
                 "seed": f.seed, "steps": f.steps,
                 "variants": dict(v.partition("=")[::2] for v in f.variant),
                 "curves": curves}, out, indent=1)
    with open(os.path.join(f.out_dir, "tensor_steps.md"), "w") as out:
      out.write(table)
    print(f"wrote {f.out_dir}/tensor_steps.{{json,md}}")


if __name__ == "__main__":
  define_flags()
  app.run(main)
