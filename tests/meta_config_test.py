"""Meta-training configs: round trip, and every bad value refused up front."""

import os

import tensorflow as tf
from absl.testing import parameterized

from mnemosyne_tf.meta import config as config_lib

_CONFIGS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                        "configs", "meta")


class MetaConfigTest(tf.test.TestCase, parameterized.TestCase):

  def test_committed_configs_load_and_round_trip(self):
    names = sorted(n for n in os.listdir(_CONFIGS) if n.endswith(".yaml"))
    self.assertGreaterEqual(len(names), 3)
    for name in names:
      cfg = config_lib.MetaTrainConfig.from_yaml(os.path.join(_CONFIGS, name))
      path = os.path.join(self.create_tempdir().full_path, name)
      with open(path, "w") as f:
        f.write(cfg.to_yaml())
      self.assertEqual(config_lib.MetaTrainConfig.from_yaml(path), cfg, msg=name)

  @parameterized.named_parameters(
      ("network", {"network": "gru"}, "network must be one of"),
      ("network_config", {"network_config": {"num_heads": 0}}, "network_config.*num_heads"),
      ("unknown_network_field", {"network_config": {"bogus": 1}}, "unknown CoordinateConfig"),
      ("held_out_task", {"tasks": ["digits_vit_32"]}, "held out"),
      ("fresh_held_out_task", {"tasks": ["iris_mlp_32x32_silu"]}, "held out"),
      ("confirmation_held_out_task", {"tasks": ["descr_lm_64"]}, "held out"),
      ("unknown_task", {"tasks": ["mnist"]}, "unknown task 'mnist'"),
      ("no_tasks", {"tasks": []}, "at least one task"),
      ("unroll_divides", {"horizon": 50, "unroll": 20}, "must divide horizon"),
      ("negative_steps", {"meta_steps": 0}, "meta_steps must be an integer >= 1"),
      ("float_steps", {"meta_steps": 2.5}, "meta_steps"),
      ("learning_rate", {"meta_learning_rate": -1.0}, "meta_learning_rate"),
      ("estimator", {"estimator": "pes2"}, "estimator must be one of"),
      ("hand_set_lstm", {"network": "lstm"}, "hand_set' exists only"),
      ("scale_range", {"init_scale_range": [2.0, 1.0]}, "init_scale_range"),
      ("max_horizon_below", {"horizon": 200, "unroll": 20, "max_horizon": 100},
       "max_horizon must be 0 or a multiple of unroll"),
      ("max_horizon_multiple", {"horizon": 200, "unroll": 20, "max_horizon": 210},
       "max_horizon"),
      ("loss_floor", {"meta_loss_floor": -1e-3}, "meta_loss_floor must be a float >= 0"),
      ("unknown_field", {"learning_rate": 0.1}, "unknown fields"),
      ("weights_without_file", {"init": "weights"}, "init_weights is needed"),
      ("file_without_weights_init", {"init_weights": "coordinate_v2"}, "init_weights is needed"),
      ("weights_of_other_network", {"init": "weights", "init_weights": "lstm_v1"},
       "are for network 'lstm', not 'coordinate'"),
      ("theta_does_not_fit", {"init": "weights", "init_weights": "coordinate_v2",
                              "network_config": {"num_heads": 3}}, "theta"),
      ("mapping_for_coordinate", {"init": "weights",
                                  "init_weights": {"coordinate": "coordinate_v2"}},
       "mapping of init_weights is for network 'super'"),
      ("mapping_keys", {"network": "super", "init": "weights",
                        "init_weights": {"coordinate": "coordinate_v2"}}, "exactly the keys"),
      ("calibrate_zero", {"calibrate_step_size": [1.0, 0.0]}, "calibrate_step_size must be"),
      ("calibrate_repeats", {"calibrate_step_size": [2.0, 2]}, "distinct"),
      ("calibrate_not_a_list", {"calibrate_step_size": 2.0}, "calibrate_step_size must be"),
      ("calibrate_lstm", {"network": "lstm", "init": "random", "calibrate_step_size": [1.0]},
       "needs a network with a log_step_size"),
      ("calibrate_horizon_multiple", {"horizon": 200, "unroll": 20, "calibrate_horizon": 210},
       "calibrate_horizon must be"),
      ("calibrate_horizon_short", {"horizon": 200, "unroll": 20, "calibrate_horizon": 100},
       "calibrate_horizon must be"),
      ("second_order_es", {"estimator": "es", "second_order": True}, "second_order needs"),
      ("second_order_type", {"second_order": "yes"}, "second_order must be"),
      ("task_normalization_type", {"meta_grad_task_normalization": 1},
       "meta_grad_task_normalization must be"),
      ("criterion_without_calibration", {"calibrate_criterion": "adam_rank"},
       "calibrate_criterion needs calibrate_step_size"),
      ("calibrate_criterion", {"calibrate_step_size": [1.0], "calibrate_criterion": "best"},
       "calibrate_criterion must be one of"),
      ("calibrate_seeds_zero", {"calibrate_step_size": [1.0], "calibrate_seeds": 0},
       "calibrate_seeds must be an integer >= 1"),
      ("calibrate_seeds_bool", {"calibrate_step_size": [1.0], "calibrate_seeds": True},
       "calibrate_seeds must be an integer >= 1"),
      ("seeds_without_calibration", {"calibrate_seeds": 3},
       "calibrate_seeds needs calibrate_step_size"),
      ("margin_below_one", {"calibrate_step_size": [1.0], "calibrate_stability_margin": 0.5},
       "calibrate_stability_margin must be a float >= 1"),
      ("margin_not_a_number", {"calibrate_step_size": [1.0], "calibrate_stability_margin": "4"},
       "calibrate_stability_margin must be a float >= 1"),
      ("margin_without_calibration", {"calibrate_stability_margin": 4.0},
       "calibrate_stability_margin needs calibrate_step_size"),
      ("adam_floor_off_grid", {"calibrate_step_size": [1.0], "calibrate_criterion": "adam_rank",
                               "calibrate_adam_floor": 0.002},
       "calibrate_adam_floor must be 0 or a learning rate of the Adam grid"),
      ("adam_floor_bool", {"calibrate_step_size": [1.0], "calibrate_criterion": "adam_rank",
                           "calibrate_adam_floor": True},
       "calibrate_adam_floor must be 0 or a learning rate"),
      ("adam_floor_without_rank", {"calibrate_step_size": [1.0], "calibrate_adam_floor": 0.001},
       "calibrate_adam_floor needs calibrate_criterion: adam_rank"),
      ("rise_negative", {"calibrate_step_size": [1.0], "calibrate_rise_tolerance": -0.01},
       r"calibrate_rise_tolerance must be a float in \[0, 1\]"),
      ("rise_above_one", {"calibrate_step_size": [1.0], "calibrate_rise_tolerance": 2.0},
       r"calibrate_rise_tolerance must be a float in \[0, 1\]"),
      ("rise_bool", {"calibrate_step_size": [1.0], "calibrate_rise_tolerance": True},
       "calibrate_rise_tolerance must be a float"),
      ("rise_nan", {"calibrate_step_size": [1.0], "calibrate_rise_tolerance": float("nan")},
       "calibrate_rise_tolerance must be a float"),
      ("rise_without_calibration", {"calibrate_rise_tolerance": 0.05},
       "calibrate_rise_tolerance needs calibrate_step_size"))
  def test_invalid_values_are_refused_with_their_name(self, overrides, message):
    with self.assertRaisesRegex(ValueError, message):
      config_lib.MetaTrainConfig.from_dict(overrides)

  def test_calibrate_seeds_round_trips_and_is_omitted_at_its_default(self):
    three = config_lib.MetaTrainConfig.from_dict({"calibrate_step_size": [0.5, 1.0],
                                                  "calibrate_seeds": 3})
    self.assertEqual(three.to_dict()["calibrate_seeds"], 3)
    self.assertEqual(config_lib.MetaTrainConfig.from_dict(three.to_dict()), three)
    one = config_lib.MetaTrainConfig.from_dict({"calibrate_step_size": [0.5, 1.0]})
    self.assertNotIn("calibrate_seeds", one.to_dict())  # configs written before it
    self.assertNotIn("calibrate_stability_margin", one.to_dict())
    self.assertNotIn("calibrate_adam_floor", one.to_dict())
    self.assertNotIn("calibrate_rise_tolerance", one.to_dict())
    rise = config_lib.MetaTrainConfig.from_dict({"calibrate_step_size": [0.5, 1.0],
                                                 "calibrate_rise_tolerance": 0.05})
    self.assertEqual(rise.to_dict()["calibrate_rise_tolerance"], 0.05)
    self.assertEqual(config_lib.MetaTrainConfig.from_dict(rise.to_dict()), rise)
    floor = config_lib.MetaTrainConfig.from_dict({
        "calibrate_step_size": [0.5, 1.0], "calibrate_criterion": "adam_rank",
        "calibrate_adam_floor": 0.001})
    self.assertEqual(floor.to_dict()["calibrate_adam_floor"], 0.001)
    self.assertEqual(config_lib.MetaTrainConfig.from_dict(floor.to_dict()), floor)
    margin = config_lib.MetaTrainConfig.from_dict({"calibrate_step_size": [0.5, 1.0],
                                                   "calibrate_stability_margin": 4})
    self.assertEqual(config_lib.MetaTrainConfig.from_dict(margin.to_dict()), margin)
    self.assertEqual(one.calibrate_seeds, 1)

  def test_init_from_weights_starts_from_their_theta(self):
    from mnemosyne_tf import weights as weights_lib
    cfg = config_lib.MetaTrainConfig.from_dict({
        "network": "super", "init": "weights",
        "network_config": {"coordinate": {"gradient_eps": 1e-7}},  # fits: not theta
        "init_weights": {"coordinate": "coordinate_v2", "tensor": "tensor_v1"}})
    theta = config_lib.initial_weights_theta(cfg)
    for part in ("coordinate", "tensor"):
      source = weights_lib.load_weights(f"{part}_v2" if part == "coordinate" else "tensor_v1")
      for name, value in source.theta.items():
        self.assertAllEqual(theta[f"{part}/{name}"], value)
    self.assertLen(theta, sum(len(weights_lib.load_weights(n).theta)
                              for n in ("coordinate_v2", "tensor_v1")))

  def test_all_problems_are_reported_at_once(self):
    with self.assertRaises(ValueError) as caught:
      config_lib.MetaTrainConfig.from_dict({"meta_steps": 0, "estimator": "x"})
    self.assertIn("meta_steps", str(caught.exception))
    self.assertIn("estimator", str(caught.exception))

  def test_unreadable_files_name_the_path(self):
    with self.assertRaisesRegex(ValueError, "cannot read.*nope.yaml"):
      config_lib.MetaTrainConfig.from_yaml("/nonexistent/nope.yaml")
    path = os.path.join(self.create_tempdir().full_path, "bad.yaml")
    with open(path, "w") as f:
      f.write("network: [unclosed\n")
    with self.assertRaisesRegex(ValueError, "bad.yaml.*not valid YAML"):
      config_lib.MetaTrainConfig.from_yaml(path)


if __name__ == "__main__":
  tf.test.main()
