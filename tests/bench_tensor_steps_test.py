"""The per-tensor step probe: with no scale it is the evaluation's run
of the Keras optimizer; a scale of 0 freezes the tensors it names; the
multiplier is the optimizer's learning rate; bad arguments fail first."""

import json
import os
import subprocess
import sys

import numpy as np
import tensorflow as tf

from benchmarks import tensor_steps
from mnemosyne_tf.meta import evaluate
from mnemosyne_tf.meta import tasks as tasks_lib

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class TensorStepsTest(tf.test.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.task = tasks_lib.Task(tasks_lib.get_spec("iris_mlp_16_relu"))

  def test_unscaled_run_is_the_evaluations_run(self):
    probe = tensor_steps.run(self.task, "coordinate_v15", [], 1.0, steps=20, seed=2,
                             record_every=10)
    reference = evaluate.train_curve(self.task, "mnemosyne:coordinate_v15", steps=20, seed=2,
                                     record_every=10)
    self.assertEqual(probe["steps"], reference["steps"])
    self.assertAllClose(probe["loss"], reference["loss"], rtol=1e-6, atol=0)
    self.assertEqual(probe["scaled"], {})

  def test_scale_zero_freezes_the_named_tensors_and_multiplier_is_the_step(self):
    frozen = tensor_steps.run(self.task, "coordinate_v15", [("kernel", 0.0)], 1.0, steps=10,
                              seed=2, record_every=10)
    self.assertEqual(sorted(frozen["scaled"].values()), [0.0, 0.0])
    self.assertTrue(all("kernel" in path for path in frozen["scaled"]))
    # Only the biases move: the loss changes, but much less than when
    # everything trains.
    full = tensor_steps.run(self.task, "coordinate_v15", [], 1.0, steps=10, seed=2,
                            record_every=10)
    self.assertNotEqual(frozen["loss"][-1], frozen["loss"][0])
    self.assertGreater(full["loss"][0] - full["loss"][-1],
                       abs(frozen["loss"][0] - frozen["loss"][-1]))
    # Every tensor scaled by 0 (first match wins; "" matches every path, which
    # the command line does not accept): the model does not move.
    none = tensor_steps.run(self.task, "coordinate_v15", [("", 0.0), ("kernel", 1.0)], 1.0,
                            steps=10, seed=2, record_every=10)
    self.assertEqual(none["loss"][-1], none["loss"][0])
    # A scale of 2 on every tensor is the optimizer's learning rate of 2 (the
    # rule's state never sees the learning rate; no weight decay).
    doubled = tensor_steps.run(self.task, "coordinate_v15", [("", 2.0)], 1.0, steps=10,
                               seed=2, record_every=5)
    by_rate = tensor_steps.run(self.task, "coordinate_v15", [], 2.0, steps=10, seed=2,
                               record_every=5)
    self.assertAllClose(doubled["loss"], by_rate["loss"], rtol=1e-5, atol=0)
    with self.assertRaisesRegex(ValueError, "no tensor of iris_mlp_16_relu has \\['atention'\\]"):
      tensor_steps.run(self.task, "coordinate_v15", [("atention", 0.5)], 1.0, steps=10, seed=2,
                       record_every=10)

  def test_tensor_stats_against_a_replay_of_sgd(self):
    """TensorStats in the traced loop of evaluate.train_curve, with plain SGD
    (u_t = -lr g_t), against the same 4 steps replayed in numpy from the
    task's own loss and batches."""
    import keras
    lr, seed, steps = 0.1, 3, 4
    stats = tensor_steps.TensorStats()
    evaluate.train_curve(self.task, lambda: keras.optimizers.SGD(lr), steps, seed,
                         record_every=2, after_update=stats)
    params = [tf.Variable(p) for p in self.task.init_params(seed)]
    grads, updates, norms, olds = [], [], [], []
    for step in range(steps):
      index = tf.random.stateless_uniform([self.task.spec.batch_size], [seed, step],
                                          maxval=self.task.size, dtype=tf.int32)
      with tf.GradientTape() as tape:
        loss = self.task.loss(params, tf.gather(self.task.x, index),
                              tf.gather(self.task.y, index))
      raw = tape.gradient(loss, params)
      g = [x.numpy().astype(np.float64).ravel() for x in raw]
      norms.append([np.linalg.norm(p.numpy().astype(np.float64)) for p in params])
      olds.append([p.numpy().astype(np.float64).ravel() for p in params])
      for p, gi in zip(params, raw):
        p.assign_sub(lr * gi)
      grads.append(g)
      updates.append([-lr * gi for gi in g])
    cos = lambda a, b: float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))
    paths = [f"t{i}" for i in range(len(params))]
    summary = stats.summary(paths)
    for i, path in enumerate(paths):
      expected = {
          "agreement": np.mean([cos(grads[t][i], -updates[t - 1][i]) for t in range(1, steps)]),
          "gradient_cos": np.mean([cos(grads[t][i], grads[t - 1][i]) for t in range(1, steps)]),
          "relative_update": np.mean([np.linalg.norm(updates[t][i]) / norms[t][i]
                                      if norms[t][i] else 0.0 for t in range(steps)]),
          "radial": np.mean([cos(updates[t][i], olds[t][i]) if norms[t][i] else 0.0
                             for t in range(steps)]),
          "norm_ratio": (np.linalg.norm(olds[-1][i] + updates[-1][i]) / norms[0][i]
                         if norms[0][i] else 0.0)}
      for name, value in expected.items():
        self.assertAllClose(summary[path][name], value, rtol=1e-4, atol=1e-6, msg=(path, name))
    # Under SGD the update is the negated gradient: agreement = gradient_cos.
    self.assertAllClose(summary["t0"]["agreement"], summary["t0"]["gradient_cos"], rtol=1e-5)

  def test_parsing(self):
    self.assertEqual(tensor_steps.parse_variant("a=attention*0.25, dense*1"),
                     ("a", [("attention", 0.25), ("dense", 1.0)]))
    self.assertEqual(tensor_steps.parse_variant("all="), ("all", []))
    self.assertEqual(tensor_steps.factor_of("mha/query/kernel", [("query", 0.5), ("mha", 2.0)]),
                     0.5)
    self.assertEqual(tensor_steps.factor_of("dense/kernel", [("query", 0.5)]), 1.0)
    for bad in ("noequals", "=attention*1", "a=attention", "a=attention*-1", "a=*2",
                "a=x*nan"):
      with self.assertRaises(ValueError, msg=bad):
        tensor_steps.parse_variant(bad)

  def test_binary_writes_outputs_and_refuses_bad_arguments(self):
    out_dir = self.create_tempdir().full_path
    base = [sys.executable, "-m", "benchmarks.tensor_steps", "--weights=coordinate_v15",
            "--task=iris_mlp_16_relu", "--steps=10"]
    done = subprocess.run(base + ["--variant=all=", "--variant=frozen=kernel*0", "--stats",
                                  f"--out_dir={out_dir}"],
                          cwd=_ROOT, capture_output=True, text=True, timeout=600)
    self.assertEqual(done.returncode, 0, done.stderr[-2000:])
    with open(os.path.join(out_dir, "tensor_steps.json")) as f:
      result = json.load(f)
    self.assertEqual(result["variants"], {"all": "", "frozen": "kernel*0"})
    self.assertLen(result["curves"]["all"]["loss"], 11)
    self.assertTrue(np.all(np.isfinite(result["curves"]["frozen"]["loss"])))
    frozen = result["curves"]["frozen"]["tensors"]
    for path, row in frozen.items():  # a frozen tensor never moves
      self.assertEqual(row["relative_update"] == 0.0, "kernel" in path, path)
    with open(os.path.join(out_dir, "tensor_steps.md")) as f:
      table = f.read()
    self.assertIn("| frozen |", table)
    self.assertIn("Per-tensor means, variant frozen", table)
    for args, message in ((["--task=descr_lm_64"], "not a meta-training task"),
                          (["--variant=a=x*-2"], "factor >= 0"),
                          (["--variant=a=", "--variant=a=x*1"], "must be different"),
                          (["--multiplier=0"], "multiplier > 0"),
                          (["--steps=25"], "multiple of 10"),
                          (["--variant=a=dense*1,atention*0.5"], "no tensor of")):
      bad = subprocess.run(base + args, cwd=_ROOT, capture_output=True, text=True, timeout=600)
      self.assertNotEqual(bad.returncode, 0, args)
      self.assertIn(message, bad.stderr, args)


if __name__ == "__main__":
  tf.test.main()
