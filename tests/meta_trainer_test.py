"""The meta-trainer: it learns, exports loadable weights, and resumes exactly."""

import json
import os
import subprocess
import sys

import numpy as np
import tensorflow as tf

import mnemosyne_tf
from mnemosyne_tf.meta import config as config_lib
from mnemosyne_tf.meta import curves
from mnemosyne_tf.meta import trainer as trainer_lib

_TINY = {"network": "coordinate", "init": "hand_set", "seed": 3,
         "tasks": ["wine_mlp_32_relu"], "horizon": 4, "unroll": 2, "meta_steps": 4,
         "checkpoint_every": 2, "log_every": 2, "meta_learning_rate": 0.01,
         "loss_scale_range": [0.5, 2.0]}
_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def tiny(**overrides):
  return config_lib.MetaTrainConfig.from_dict(dict(_TINY, **overrides))


class MetaTrainerTest(tf.test.TestCase):

  def test_training_changes_theta_and_exports_loadable_weights(self):
    workdir = self.create_tempdir().full_path
    meta = trainer_lib.MetaTrainer(tiny(), workdir, command="test")
    before = {k: v.numpy() for k, v in meta.theta.items()}
    summary = meta.train(log=lambda line: None)
    self.assertNotAllClose(before["log_step_size"], meta.theta["log_step_size"])
    opt = mnemosyne_tf.Mnemosyne(weights=summary["path"])
    self.assertEqual(opt.provenance["kind"], "meta_trained")
    self.assertEqual(opt.provenance["meta_steps_done"], 4)
    self.assertEqual(opt.provenance["meta_config"], tiny().to_dict())
    with open(meta.metrics_path) as f:
      records = [json.loads(line) for line in f]
    self.assertEqual([r["step"] for r in records], [1, 2, 3, 4])
    self.assertTrue(all(np.isfinite(r["meta_loss"]) for r in records))
    png = curves.plot_metrics(meta.metrics_path, os.path.join(workdir, "curve.png"))
    with open(png, "rb") as f:
      self.assertEqual(f.read(8), b"\x89PNG\r\n\x1a\n")
    # The projection is fixed, never trained.
    self.assertAllEqual(opt._rule.theta["cam0/projection"],
                        meta.network.projections()["cam0/projection"])

  def test_resume_continues_exactly_where_it_stopped(self):
    straight = trainer_lib.MetaTrainer(tiny(), self.create_tempdir().full_path)
    straight.train(log=lambda line: None)
    workdir = self.create_tempdir().full_path
    trainer_lib.MetaTrainer(tiny(meta_steps=2), workdir).train(log=lambda line: None)
    lines = []
    resumed = trainer_lib.MetaTrainer(tiny(), workdir)
    resumed.train(log=lines.append)
    self.assertIn("resumed", lines[0])
    for name in straight.theta:
      self.assertAllClose(resumed.theta[name], straight.theta[name], rtol=1e-6, atol=1e-8,
                          msg=name)
    with open(resumed.metrics_path) as f:
      self.assertEqual([json.loads(line)["step"] for line in f], [1, 2, 3, 4])

  def test_zero_query_key_weights_are_a_saddle_and_init_noise_leaves_it(self):
    """At W_Q = W_K = 0 (the hand-set init) the hyperbolic kernel is symmetric
    and their meta-gradient is exactly zero; init_noise moves them off it."""
    stuck = trainer_lib.MetaTrainer(tiny(meta_steps=2), self.create_tempdir().full_path)
    stuck.train(log=lambda line: None)
    self.assertAllEqual(stuck.theta["cam0/key"], tf.zeros_like(stuck.theta["cam0/key"]))
    noisy = trainer_lib.MetaTrainer(tiny(meta_steps=2, init_noise=0.1),
                                    self.create_tempdir().full_path)
    start = noisy.theta["cam0/key"].numpy()
    self.assertGreater(np.abs(start).max(), 0.0)
    noisy.train(log=lambda line: None)
    self.assertNotAllClose(start, noisy.theta["cam0/key"], atol=1e-7, rtol=0)

  def test_es_estimator_updates_theta(self):
    meta = trainer_lib.MetaTrainer(tiny(estimator="es", es_pairs=2, meta_steps=2),
                                   self.create_tempdir().full_path)
    before = meta.theta["head/w1"].numpy()
    meta.train(log=lambda line: None)
    self.assertNotAllClose(before, meta.theta["head/w1"])

  def test_binary_refuses_a_bad_config_before_doing_anything(self):
    workdir = self.create_tempdir().full_path
    bad = os.path.join(workdir, "bad.yaml")
    with open(bad, "w") as f:
      f.write("tasks: [digits_vit_32]\nmeta_steps: 0\n")
    out = subprocess.run(
        [sys.executable, "-m", "mnemosyne_tf.meta.train", f"--config={bad}",
         f"--workdir={workdir}/run"], capture_output=True, text=True, cwd=_ROOT,
        env=dict(os.environ, PYTHONPATH=_ROOT), check=False)
    self.assertNotEqual(out.returncode, 0)
    self.assertIn("held out", out.stderr)
    self.assertIn("meta_steps", out.stderr)
    self.assertFalse(os.path.exists(os.path.join(workdir, "run")))


if __name__ == "__main__":
  tf.test.main()
