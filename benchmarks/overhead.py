"""Optimizer cost against Adam, measured side by side in one process.

    python -m benchmarks.overhead [--repeats=5] [--steps=50]

For the demo's digits CNN (and any model given by --model), times full training
steps (forward, backward, optimizer update) with Mnemosyne and with Adam,
interleaving the optimizers over several repeats so machine noise hits both
alike, with XLA on and off; reports the median step-time ratio and the
optimizer-state floats per parameter. Ratios, not absolute times, are the
result: these machines are shared and noisy.
"""

import os
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app
from absl import flags


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


def state_floats_per_parameter(optimizer, model) -> float:
  params = sum(int(v.numpy().size) for v in model.trainable_variables)
  slots = [v for v in optimizer.variables
           if v.path.split("/")[-1] not in ("iteration", "learning_rate")]
  return sum(int(v.numpy().size) for v in slots) / params


def measure(build_model, x, y, repeats, steps):
  """{(optimizer, xla): (median seconds/step, state floats/param)}."""
  import keras
  import mnemosyne_tf
  runs = {}
  for jit in (True, False):
    for name, make_opt in (("mnemosyne", mnemosyne_tf.Mnemosyne),
                           ("adam", lambda: keras.optimizers.Adam(1e-3))):
      keras.utils.set_random_seed(0)
      model = build_model()
      opt = make_opt()
      step = make_step(model, opt, jit)
      step(x, y)  # trace and compile outside the timing
      runs[(name, jit)] = {"step": step, "model": model, "opt": opt, "times": []}
  for _ in range(repeats):
    for run in runs.values():
      start = time.perf_counter()
      for _ in range(steps):
        loss = run["step"](x, y)
      loss.numpy()
      run["times"].append((time.perf_counter() - start) / steps)
  return {key: (statistics.median(run["times"]),
                state_floats_per_parameter(run["opt"], run["model"]))
          for key, run in runs.items()}


def define_flags():
  """Defines this binary's flags (only when it runs as a binary)."""
  flags.DEFINE_integer("repeats", 5, "Interleaved timing rounds.")
  flags.DEFINE_integer("steps", 50, "Timed steps per round.")
  flags.DEFINE_integer("batch_size", 64, "Batch size.")

def main(argv):
  del argv
  from mnemosyne_tf import digits
  x_train, y_train, _, _ = digits.load_split(0)
  x, y = x_train[:flags.FLAGS.batch_size], y_train[:flags.FLAGS.batch_size]
  results = measure(digits.build_cnn, x, y, flags.FLAGS.repeats, flags.FLAGS.steps)
  params = digits.build_cnn().count_params()
  print(f"\nDigits CNN ({params} parameters), batch {flags.FLAGS.batch_size}, median of "
        f"{flags.FLAGS.repeats} interleaved rounds of {flags.FLAGS.steps} steps:")
  print("| XLA | Mnemosyne ms/step | Adam ms/step | step-time ratio | "
        "state floats/param (Mnemosyne / Adam) |")
  print("|---|---|---|---|---|")
  for jit in (True, False):
    m_time, m_state = results[("mnemosyne", jit)]
    a_time, a_state = results[("adam", jit)]
    print(f"| {'on' if jit else 'off'} | {1e3 * m_time:.2f} | {1e3 * a_time:.2f} | "
          f"{m_time / a_time:.2f}x | {m_state:.0f} / {a_state:.0f} |")


if __name__ == "__main__":
  define_flags()
  app.run(main)
