"""Cost of one optimizer update on one big tensor, rule variants side by side.

    python -m benchmarks.rule_cost [--size=1e6] \
        [--optimizers=mnemosyne:coordinate_v24,mnemosyne:coordinate_v24+step_adaptation_rate=0,...] \
        [--baseline=adam:0.001] [--rounds=3] [--out_dir=...]

`benchmarks/overhead.py` times whole training steps of models; this times
only the update (`apply_gradients` on one variable of about `--size`
coordinates, with a fixed gradient kept in a variable, so that nothing but the
update is timed), which is where a learned rule spends its extra time on big
models. So it tells what each part of a rule
costs: a variant that switches one stage off (`<weights>+field=value`, as in
`mnemosyne_tf.meta.evaluate`) against the rule with it on. Every optimizer is
built and compiled first; then `--rounds` rounds time each of them in turn
(interleaved, so that the shared machine's load falls on all alike), each
call `--steps_per_call` updates in one compiled loop, and the median round
counts. Printed and written to `--out_dir` (JSON and a markdown table):
milliseconds per update and the ratio to `--baseline`'s, in the same process.
"""

import datetime
import json
import os
import platform
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app  # noqa: E402
from absl import flags  # noqa: E402

DEFAULT_OPTIMIZERS = ("mnemosyne:coordinate_v24",
                      "mnemosyne:coordinate_v24+step_adaptation_rate=0",
                      "mnemosyne:coordinate_v2", "adam:0.001")
DEFAULT_OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "rule_cost")


def build_optimizers(specs) -> dict:
  """{spec: a fresh optimizer} (`mnemosyne_tf.meta.evaluate.make_optimizer`'s
  specs), all built before anything is compiled; ValueError names a bad spec."""
  from mnemosyne_tf.meta import evaluate
  optimizers = {}
  for spec in specs:
    try:
      optimizers[spec] = evaluate.make_optimizer(spec)
    except ValueError as e:  # WeightsError too
      raise ValueError(f"--optimizers: {spec!r}: {e}") from None
  return optimizers


def check_args(size, specs, baseline: str, rounds: int, steps_per_call: int) -> None:
  """ValueError naming the bad argument (before anything is built)."""
  if not size >= 1:
    raise ValueError(f"--size must be >= 1, got {size}")
  if rounds < 1 or steps_per_call < 1:
    raise ValueError(f"--rounds and --steps_per_call must be >= 1, got {rounds}, "
                     f"{steps_per_call}")
  if not specs:
    raise ValueError("--optimizers is empty")
  if len(set(specs)) != len(specs):
    raise ValueError(f"--optimizers names one optimizer twice: {list(specs)}")
  if baseline not in specs:
    raise ValueError(f"--baseline {baseline!r} is not one of --optimizers {list(specs)}")


def variable_shape(size: int):
  """[rows, cols] with rows * cols >= size, as close as whole rows of about
  1,000 allow (the real count is recorded)."""
  rows = max(1, int(size) // 1000)
  return [rows, -(-int(size) // rows)]


def measure(size: int, optimizers: dict, rounds: int = 3, steps_per_call: int = 10,
            jit_compile: bool = True, log=print):
  """For {spec: optimizer} (`build_optimizers`): ({spec: [seconds per update
  in each round]}, {spec: the variable's mean absolute change over the first
  call} (> 0: the optimizer did update it))."""
  import keras
  import tensorflow as tf
  shape = variable_shape(size)
  grad = tf.Variable(tf.sin(3.0 * tf.random.stateless_normal(shape, [0, 1])), trainable=False)
  calls, moved = {}, {}
  for spec, optimizer in optimizers.items():
    var = keras.Variable(tf.random.stateless_normal(shape, [0, 0]) * 0.1)
    optimizer.build([var])

    def make(optimizer=optimizer, var=var):
      @tf.function(jit_compile=jit_compile)
      def call():
        for _ in tf.range(steps_per_call):
          optimizer.apply_gradients([(grad, var)])
        return var[0, 0]  # a scalar: no copy of the variable is timed
      return call

    calls[spec] = make()
    before = var.numpy()
    calls[spec]().numpy()  # traces and compiles
    moved[spec] = float(abs(var.numpy() - before).mean())
    log(f"  built {spec}")
  times = {spec: [] for spec in optimizers}
  for r in range(rounds):
    for spec, call in calls.items():
      start = time.perf_counter()
      call().numpy()
      times[spec].append((time.perf_counter() - start) / steps_per_call)
    log(f"  round {r + 1}/{rounds}: " + "  ".join(
        f"{spec} {times[spec][-1] * 1e3:.2f} ms" for spec in optimizers))
  return times, moved


def median(values):
  ordered = sorted(values)
  mid = len(ordered) // 2
  return ordered[mid] if len(ordered) % 2 else 0.5 * (ordered[mid - 1] + ordered[mid])


def table(times: dict, baseline: str):
  """[{optimizer, ms_per_update, ratio}] in the order given, ratio to baseline."""
  base = median(times[baseline])
  return [{"optimizer": spec, "ms_per_update": median(t) * 1e3, "ratio": median(t) / base}
          for spec, t in times.items()]


def markdown(rows, meta) -> str:
  lines = [f"Update cost, {meta['date']} on {meta['machine']}; command: `{meta['command']}`; "
           f"one variable of {meta['size']:,} coordinates, XLA "
           f"{'on' if meta['jit_compile'] else 'off'}, median of {meta['rounds']} interleaved "
           f"rounds of {meta['steps_per_call']} updates.",
           "",
           f"| optimizer | ms per update | vs {meta['baseline']} |",
           "|---|---|---|"]
  lines += [f"| {r['optimizer']} | {r['ms_per_update']:.3g} | {r['ratio']:.2f}x |" for r in rows]
  return "\n".join(lines)


def define_flags():
  flags.DEFINE_float("size", 1e6, "Coordinates of the one variable (rounded up to whole "
                    "rows of about 1,000; the count used is recorded).")
  flags.DEFINE_list("optimizers", list(DEFAULT_OPTIMIZERS),
                    "mnemosyne_tf.meta.evaluate optimizer specs: mnemosyne:<weights>"
                    "[+field=value...] or adam:<lr>.")
  flags.DEFINE_string("baseline", "adam:0.001", "The optimizer the ratios divide by.")
  flags.DEFINE_integer("rounds", 3, "Interleaved timing rounds.")
  flags.DEFINE_integer("steps_per_call", 10, "Updates per compiled call.")
  flags.DEFINE_bool("jit_compile", True, "Compile the updates with XLA.")
  flags.DEFINE_string("out_dir", None, f"Outputs (default {DEFAULT_OUT}).")


def main(argv):
  del argv
  f = flags.FLAGS
  check_args(f.size, f.optimizers, f.baseline, f.rounds, f.steps_per_call)
  optimizers = build_optimizers(f.optimizers)
  rows, cols = variable_shape(f.size)
  size = rows * cols
  times, moved = measure(size, optimizers, f.rounds, f.steps_per_call, f.jit_compile)
  still = [spec for spec, m in moved.items() if not m > 0]
  if still:
    raise SystemExit(f"these optimizers did not change the variable: {still}")
  rows = table(times, f.baseline)
  meta = {"date": datetime.date.today().isoformat(),
          "machine": f"{platform.machine()}, {os.cpu_count()} cores, "
                     f"Python {platform.python_version()}",
          "command": "python -m benchmarks.rule_cost " + " ".join(sys.argv[1:]),
          "size": size, "baseline": f.baseline, "rounds": f.rounds,
          "steps_per_call": f.steps_per_call, "jit_compile": f.jit_compile}
  text = markdown(rows, meta)
  print(text)
  out_dir = f.out_dir or DEFAULT_OUT
  os.makedirs(out_dir, exist_ok=True)
  with open(os.path.join(out_dir, "rule_cost.json"), "w") as fh:
    json.dump({"meta": meta, "rows": rows, "seconds": times, "mean_abs_change": moved},
              fh, indent=1)
  with open(os.path.join(out_dir, "rule_cost.md"), "w") as fh:
    fh.write(text + "\n")
  print(f"wrote {out_dir}/rule_cost.{{json,md}}")


if __name__ == "__main__":
  define_flags()
  app.run(main)
