"""Every YAML in configs/experiments loads into its experiment's config and
round-trips (dump -> load -> equal)."""

import glob
import os

import tensorflow as tf

from official.core import exp_factory
from official.modeling import hyperparams

from pipelines import train
from pipelines import vit_finetuning as vit

CONFIGS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                       "configs", "experiments")
# A file's name starts with its model: bert_..., t5_..., vit_...
EXPERIMENTS = {"bert": "mnemosyne/bert_pretraining",
               "t5": "mnemosyne/t5_prompt_tuning",
               "vit": "mnemosyne/vit_finetuning"}


def experiment_of(path):
  name = os.path.basename(path)
  model = name.split("_")[0]
  if model not in EXPERIMENTS:
    raise AssertionError(f"{name}: its name does not start with one of {sorted(EXPERIMENTS)}")
  return EXPERIMENTS[model]


class ExperimentConfigsTest(tf.test.TestCase):

  def test_every_yaml_loads_and_round_trips(self):
    paths = sorted(glob.glob(os.path.join(CONFIGS, "*.yaml")))
    self.assertNotEmpty(paths)
    for path in paths:
      with self.subTest(os.path.basename(path)):
        experiment = experiment_of(path)
        params = train.parse_config(experiment, [path])
        dumped = os.path.join(self.create_tempdir().full_path, "params.yaml")
        hyperparams.save_params_dict_to_yaml(params, dumped)
        again = hyperparams.override_params_dict(
            exp_factory.get_exp_config(experiment), dumped, is_strict=True)
        self.assertEqual(again.as_dict(), params.as_dict())

  def test_every_training_input_is_seeded(self):
    # A resumed run skips the batches it consumed: only a seeded input order
    # gives it the batches an uninterrupted run would see.
    for path in sorted(glob.glob(os.path.join(CONFIGS, "*.yaml"))):
      with self.subTest(os.path.basename(path)):
        params = train.parse_config(experiment_of(path), [path])
        self.assertIsNotNone(params.task.train_data.seed)

  def test_every_experiment_has_a_tiny_config(self):
    for experiment in EXPERIMENTS.values():
      tiny = os.path.join(CONFIGS, experiment.split("/")[1] + "_tiny.yaml")
      self.assertTrue(os.path.exists(tiny), tiny)

  def test_vit_paper_scale_configs_are_vit_b16_and_vit_h14(self):
    sizes = {}
    for name in ("b16", "h14"):
      params = train.parse_config(vit.EXPERIMENT,
                                  [os.path.join(CONFIGS, f"vit_finetuning_{name}.yaml")])
      backbone = vit.backbone_config(params.task.model)
      sizes[name] = (backbone.hidden_size, backbone.patch_size,
                     backbone.transformer.num_layers, backbone.transformer.num_heads,
                     backbone.transformer.mlp_dim)
      self.assertEqual(params.trainer.optimizer_config.optimizer.type, "mnemosyne")
      self.assertEqual(params.task.model.image_size % backbone.patch_size, 0)
    self.assertEqual(sizes, {"b16": (768, 16, 12, 12, 3072), "h14": (1280, 14, 32, 16, 5120)})


if __name__ == "__main__":
  tf.test.main()
