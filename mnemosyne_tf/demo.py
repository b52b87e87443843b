"""The demo: train a real CNN on real digits with Mnemosyne and with Adam(1e-3).

    python -m mnemosyne_tf.demo [--epochs=30] [--out_dir=demo_output]

Data: scikit-learn's bundled 8x8 handwritten digits (1,797 images, installed with
scikit-learn; no download), split 80/20 stratified with a fixed seed. Both
optimizers start from the same initial weights and see the same batches.
Mnemosyne runs with no arguments at all (its shipped weights, no learning
rate); Adam with Keras's default 1e-3. Prints progress per epoch, then a table;
writes `<out_dir>/demo.png` (curves) and `<out_dir>/demo.json` (every number).
"""

import json
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app
from absl import flags

from mnemosyne_tf import digits


def train(name, optimizer, initial_weights, data, epochs, batch_size, seed, jit_compile):
  """Trains the CNN; returns per-epoch curves and the training time (s).

  Training time counts only `fit`'s epochs (the per-epoch evaluation that draws
  the curves is excluded).
  """
  import keras
  import numpy as np
  x_train, y_train, x_test, y_test = data
  model = digits.build_cnn()
  model.set_weights(initial_weights)
  loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
  model.compile(optimizer=optimizer, loss=loss_fn, jit_compile=jit_compile)
  history = {"train_loss": [], "test_loss": [], "test_accuracy": [], "epoch_seconds": []}
  clock = {"train_seconds": 0.0}

  def evaluate():
    train_loss = float(loss_fn(y_train, model(x_train, training=False)))
    logits = model(x_test, training=False)
    history["train_loss"].append(train_loss)
    history["test_loss"].append(float(loss_fn(y_test, logits)))
    history["test_accuracy"].append(float(np.mean(np.argmax(logits, -1) == y_test)))

  class Progress(keras.callbacks.Callback):

    def on_epoch_begin(self, epoch, logs=None):
      self.start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
      history["epoch_seconds"].append(time.perf_counter() - self.start)
      clock["train_seconds"] += history["epoch_seconds"][-1]
      evaluate()
      print(f"  [{name}] epoch {epoch + 1:3d}/{epochs}  train loss "
            f"{history['train_loss'][-1]:.4f}  test accuracy "
            f"{history['test_accuracy'][-1]:.3f}  ({clock['train_seconds']:.1f}s)",
            flush=True)

  evaluate()  # epoch 0: the shared starting point
  keras.utils.set_random_seed(seed)  # same shuffling for every optimizer
  model.fit(x_train, y_train, batch_size=batch_size, epochs=epochs, shuffle=True,
            verbose=0, callbacks=[Progress()])
  steps_per_epoch = -(-len(x_train) // batch_size)
  # Steady-state step time: epochs after the first (which includes compilation).
  later = history["epoch_seconds"][1:] or history["epoch_seconds"]
  return {"name": name, **history, "train_seconds": clock["train_seconds"],
          "steps": epochs * steps_per_epoch,
          "ms_per_step": 1e3 * sum(later) / (len(later) * steps_per_epoch)}


def plot(results, path, title):
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(11, 4))
  for i, r in enumerate(results):
    epochs = range(len(r["train_loss"]))
    color = f"C{i}"
    ax_loss.plot(epochs, r["train_loss"], color=color, label=f"{r['name']} (train)")
    ax_loss.plot(epochs, r["test_loss"], "--", color=color, label=f"{r['name']} (test)")
    ax_acc.plot(epochs, r["test_accuracy"], color=color, label=r["name"])
  ax_loss.set(yscale="log", xlabel="epoch", ylabel="cross-entropy", title="loss")
  ax_acc.set(xlabel="epoch", ylabel="accuracy", title="test accuracy", ylim=(0, 1))
  for ax in (ax_loss, ax_acc):
    ax.grid(alpha=0.3)
    ax.legend()
  fig.suptitle(title)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


def table(results) -> str:
  base = results[-1]["ms_per_step"]
  lines = ["| optimizer | final train loss | test loss | test accuracy | train time (s) "
           "| ms/step after epoch 1 | step time vs Adam |",
           "|---|---|---|---|---|---|---|"]
  for r in results:
    lines.append(f"| {r['name']} | {r['train_loss'][-1]:.4f} | {r['test_loss'][-1]:.4f} | "
                 f"{r['test_accuracy'][-1]:.3f} | {r['train_seconds']:.1f} | "
                 f"{r['ms_per_step']:.2f} | {r['ms_per_step'] / base:.2f}x |")
  return "\n".join(lines)


def run(epochs, batch_size, out_dir, jit_compile, seed, weights=None):
  """Runs the comparison; returns the results list (also written to out_dir).
  `weights`: Mnemosyne weights (a shipped name or a file); None, the default."""
  import keras
  import mnemosyne_tf
  os.makedirs(out_dir, exist_ok=True)
  data = digits.load_split(seed)
  keras.utils.set_random_seed(seed)
  initial_weights = digits.build_cnn().get_weights()
  # Built first: bad weights fail before any training.
  mnemosyne = mnemosyne_tf.Mnemosyne() if weights is None else mnemosyne_tf.Mnemosyne(
      weights=weights)
  provenance = mnemosyne._rule.provenance
  print(f"Digits CNN, {len(data[0])} train / {len(data[2])} test images, "
        f"{epochs} epochs of batch {batch_size}, XLA={jit_compile}.")
  print(f"Mnemosyne weights: {mnemosyne._rule.weights} ({provenance.get('kind')}): "
        f"{provenance.get('description', '')}", flush=True)
  results = []
  label = "Mnemosyne (default)" if weights is None else f"Mnemosyne ({weights})"
  for name, optimizer in ((label, mnemosyne),
                          ("Adam (lr=1e-3)", keras.optimizers.Adam(1e-3))):
    print(f"Training with {name} ...", flush=True)
    results.append(train(name, optimizer, initial_weights, data, epochs, batch_size,
                         seed, jit_compile))
  text = table(results)
  print("\n" + text)
  png = os.path.join(out_dir, "demo.png")
  plot(results, png, f"Digits CNN: Mnemosyne ({mnemosyne._rule.weights}) vs Adam(1e-3)")
  with open(os.path.join(out_dir, "demo.json"), "w") as f:
    json.dump({"weights": mnemosyne._rule.weights, "provenance": provenance,
               "epochs": epochs, "batch_size": batch_size, "seed": seed,
               "jit_compile": jit_compile, "results": results}, f, indent=1)
  print(f"\nWrote {png} and {os.path.join(out_dir, 'demo.json')}")
  return results


def define_flags():
  """Defines this binary's flags (only when it runs as a binary)."""
  flags.DEFINE_integer("epochs", 30, "Training epochs per optimizer.")
  flags.DEFINE_integer("batch_size", 64, "Batch size.")
  flags.DEFINE_string("out_dir", "demo_output", "Where to write the PNG and JSON.")
  flags.DEFINE_bool("jit_compile", True, "Compile the train step with XLA.")
  flags.DEFINE_integer("seed", 0, "Seed of the split, the init and the batches.")
  flags.DEFINE_string("weights", None, "Mnemosyne weights (a shipped name such as "
                      "coordinate_v10, or a file); default: the package default.")

def main(argv):
  del argv
  f = flags.FLAGS
  run(f.epochs, f.batch_size, f.out_dir, f.jit_compile, f.seed, f.weights)


if __name__ == "__main__":
  define_flags()
  app.run(main)
