"""How an optimizer's step responds when the gradients shrink.

    python -m benchmarks.shrinking_gradients [--weights=coordinate_v15,coordinate_v14,coordinate_v2,coordinate_v10,hand_set_v0] \
        [--adam=0.001,0.01] [--out_dir=benchmarks/results/shrinking_gradients]

Late in a run the loss is small and so are the gradients. Adam's step shrinks
with them: its second moment still remembers the earlier, larger gradients
(beta_2 = 0.999, a memory of about 1,000 steps), so m / sqrt(v) becomes small.
A rule whose step does not shrink keeps moving the weights by as much as early
in training, and a run that has reached a loss of 1e-5 can blow up
(coordinate_v10.md).

One parameter of `--size` coordinates gets the same gradients for every
optimizer: Gaussian noise of RMS `--high` plus a drift of 0.3 x that, for
`--switch` steps, then the same at `--low` for as many steps. Each optimizer is
an ordinary Keras optimizer applied to a variable; the update is the change of
the variable. Printed: the update RMS over windows before and after the
switch, and the ratio late / before (Adam at 1e-3 -> 1e-6 gradients: about
1e-3, the gradients' own ratio).

Each optimizer also runs on the negated sequence (-g at every step). A rule
that follows the gradient is odd: its updates are negated too (Adam exactly).
"late even / rms" is the RMS of the part that is not, (u(g) + u(-g)) / 2, over
the late window, relative to the update RMS there: a move that does not
depend on the gradient's sign (0 for Adam).
"""

import datetime
import json
import os
import platform

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app  # noqa: E402
from absl import flags  # noqa: E402

DEFAULT_WEIGHTS = ("coordinate_v15", "coordinate_v14", "coordinate_v2", "coordinate_v10", "hand_set_v0")
DEFAULT_ADAM = (1e-3, 1e-2)


def gradients(size: int, switch: int, high: float, low: float, seed: int = 0):
  """The gradient sequence: 2 x `switch` float32 arrays of `size`."""
  import numpy as np
  rng = np.random.default_rng(seed)
  out = []
  for t in range(2 * switch):
    scale = high if t < switch else low
    out.append((rng.standard_normal(size) * scale + 0.3 * scale).astype(np.float32))
  return out


def make_optimizer(spec: str):
  """'adam:<lr>' or the name or path of learned-optimizer weights."""
  import keras
  import mnemosyne_tf
  kind, _, arg = spec.partition(":")
  if kind == "adam":
    return keras.optimizers.Adam(float(arg))
  return mnemosyne_tf.LearnedOptimizer(weights=spec)


def updates(spec: str, grads) -> list:
  """The update (numpy) at every step, applying `grads` in order."""
  import tensorflow as tf
  variable = tf.Variable(tf.zeros_like(grads[0]))
  optimizer = make_optimizer(spec)
  optimizer.build([variable])

  @tf.function
  def step(g):
    before = tf.identity(variable)
    optimizer.apply_gradients([(g, variable)])
    return variable - before

  return [step(tf.constant(g)).numpy() for g in grads]


def rms(x) -> float:
  import numpy as np
  return float(np.sqrt(np.mean(np.square(x))))


def even_part(plus, minus, window) -> float:
  """RMS over `window` of (u(g) + u(-g)) / 2, relative to the RMS of u(g):
  `plus` and `minus` are the updates on a sequence and on its negation."""
  import numpy as np
  a, b = window
  plus, minus = np.array(plus[a:b]), np.array(minus[a:b])
  return rms((plus + minus) / 2) / max(rms(plus), 1e-30)


def windows(switch: int) -> dict:
  """Named step windows [start, end) over a run of 2 x `switch` steps."""
  return {"before": (switch - switch // 5, switch),
          "just after": (switch + switch // 50, switch + switch // 25),
          "after": (switch + switch // 5, switch + 2 * switch // 5),
          "late": (2 * switch - switch // 5, 2 * switch)}


def summarize(sizes: list, switch: int, even: float = None) -> dict:
  import numpy as np
  out = {name: float(np.mean(sizes[a:b])) for name, (a, b) in windows(switch).items()}
  out["late / before"] = out["late"] / out["before"]
  if even is not None:
    out["late even / rms"] = even
  return out


def to_markdown(rows: dict, switch: int, high: float, low: float) -> str:
  spans = windows(switch)
  head = ["optimizer"] + [f"{name} ({a}-{b})" for name, (a, b) in spans.items()]
  lines = [f"Update RMS when the gradient RMS drops from {high:g} to {low:g} at step "
           f"{switch} (ratio {low / high:g}):", "",
           "| " + " | ".join(head + ["late / before", "late even / rms"]) + " |",
           "|" + "---|" * (len(head) + 2)]
  for spec, row in rows.items():
    cells = [f"{row[name]:.3g}" for name in spans] + [
        f"{row['late / before']:.3g}", f"{row.get('late even / rms', float('nan')):.3g}"]
    lines.append(f"| {spec} | " + " | ".join(cells) + " |")
  return "\n".join(lines) + "\n"


def define_flags():
  flags.DEFINE_list("weights", list(DEFAULT_WEIGHTS), "Learned-optimizer weights (names or paths).")
  flags.DEFINE_list("adam", [f"{lr:g}" for lr in DEFAULT_ADAM], "Adam learning rates.")
  flags.DEFINE_integer("size", 1000, "Coordinates of the parameter.")
  flags.DEFINE_integer("switch", 500, "Steps at the high gradient RMS, then as many at the low.")
  flags.DEFINE_float("high", 1e-3, "Gradient RMS before the switch.")
  flags.DEFINE_float("low", 1e-6, "Gradient RMS after the switch.")
  flags.DEFINE_string("out_dir", "benchmarks/results/shrinking_gradients", "Outputs.")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  f = flags.FLAGS
  if f.switch < 50 or f.size < 1 or not 0 < f.low < f.high:
    raise app.UsageError("need --switch >= 50, --size >= 1 and 0 < --low < --high")
  specs = [f"adam:{float(lr):g}" for lr in f.adam] + list(f.weights)
  from mnemosyne_tf import weights as weights_lib
  for spec in f.weights:  # bad names fail before anything runs
    weights_lib.load_weights(spec)
  grads = gradients(f.size, f.switch, f.high, f.low)
  rows, curves = {}, {}
  for spec in specs:
    plus = updates(spec, grads)
    curves[spec] = [rms(u) for u in plus]
    even = even_part(plus, updates(spec, [-g for g in grads]), windows(f.switch)["late"])
    rows[spec] = summarize(curves[spec], f.switch, even)
    print(f"{spec:30s} late / before {rows[spec]['late / before']:.3g}  "
          f"late even / rms {even:.3g}", flush=True)
  table = to_markdown(rows, f.switch, f.high, f.low)
  print(table)
  os.makedirs(f.out_dir, exist_ok=True)
  with open(os.path.join(f.out_dir, "shrinking_gradients.json"), "w") as out:
    json.dump({"date": datetime.date.today().isoformat(), "machine": platform.machine(),
               "size": f.size, "switch": f.switch, "high": f.high, "low": f.low,
               "rows": rows, "update_rms": curves}, out, indent=1)
  with open(os.path.join(f.out_dir, "shrinking_gradients.md"), "w") as out:
    out.write("`python -m benchmarks.shrinking_gradients` "
              f"({datetime.date.today().isoformat()})\n\n" + table)


if __name__ == "__main__":
  define_flags()
  app.run(main)
