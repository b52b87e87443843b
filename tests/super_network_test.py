"""Super-Mnemosyne (core): the per-tensor policy, routing, slot layouts, errors."""

import tensorflow as tf
from absl.testing import parameterized

from mnemosyne_tf.core import network
from mnemosyne_tf.core import super_network
from mnemosyne_tf.core import tensor_network

SMALL, LARGE = (7, 3), (40, 30)  # 21 and 1,200 coordinates


def make(small_mode="tensor", threshold=100):
  config = super_network.SuperConfig(tensor={"chunk": 16}, small_mode=small_mode,
                                     threshold=threshold)
  return super_network.SuperNetwork(config)


class PolicyTest(tf.test.TestCase, parameterized.TestCase):

  def test_small_tensors_get_small_mode_from_the_threshold_on(self):
    net = make("tensor", threshold=21)
    self.assertEqual(net.mode_for([20]), "tensor")
    self.assertEqual(net.mode_for([7, 3]), "coordinate")  # 21 = threshold: large
    self.assertEqual(net.mode_for([]), "tensor")  # a scalar has 1 coordinate
    reverse = make("coordinate", threshold=21)
    self.assertEqual(reverse.mode_for([20]), "coordinate")
    self.assertEqual(reverse.mode_for([3, 7]), "tensor")

  @parameterized.parameters("tensor", "coordinate")
  def test_update_is_the_chosen_sub_network_s_update(self, small_mode):
    net = make(small_mode)
    theta = net.init_theta(seed=3, step_size=1e-2)
    net.check_theta(theta)
    # The sub-networks built independently from the same configs and theta slices.
    coordinate = network.CoordinateWiseNetwork(network.CoordinateConfig())
    tensor = tensor_network.TensorWiseNetwork(tensor_network.TensorConfig(chunk=16))
    subs = {"coordinate": (coordinate, {n[len("coordinate/"):]: t for n, t in theta.items()
                                        if n.startswith("coordinate/")}),
            "tensor": (tensor, {n[len("tensor/"):]: t for n, t in theta.items()
                                if n.startswith("tensor/")})}
    for shape, want_mode in ((SMALL, small_mode),
                             (LARGE, "coordinate" if small_mode == "tensor" else "tensor")):
      sub, sub_theta = subs[want_mode]
      param = tf.zeros(shape)
      state, sub_state = net.init_state(param), sub.init_state(param)
      for t in range(1, 4):
        grad = tf.random.stateless_normal(shape, [t, 9])
        update, state = net.apply(theta, state, grad, param, t)
        want, sub_state = sub.apply(sub_theta, sub_state, grad, param, t)
        self.assertAllClose(update, want, rtol=1e-6, atol=1e-9)
        param = param + update

  def test_slot_layouts_follow_the_mode_and_round_trip(self):
    net = make("tensor")
    tensor_floats = net.parts["tensor"].state_floats(SMALL)
    self.assertEqual(net.slot_shape(SMALL), [tensor_floats])
    self.assertEqual(net.slot_shape(LARGE), [27, 40, 30])
    self.assertEqual(net.state_floats(LARGE), 27 * 1200)
    theta = net.init_theta(seed=0)
    for shape in (SMALL, LARGE):
      param = tf.zeros(shape)
      _, state = net.apply(theta, net.init_state(param), tf.ones(shape), param, 1)
      packed = net.pack_state(state, shape)
      self.assertEqual(packed.shape, net.slot_shape(shape))
      for a, b in zip(tf.nest.flatten(net.unpack_state(packed, shape)),
                      tf.nest.flatten(state)):
        self.assertAllEqual(a, b)
    with self.assertRaisesRegex(ValueError, "state_floats"):
      net.state_size()

  def test_xla_matches_eager(self):
    net = make("tensor")
    theta = net.hand_set_theta()
    for shape in (SMALL, LARGE):
      param = tf.zeros(shape)
      grad = tf.random.stateless_normal(shape, [1, 1])
      state = net.init_state(param)
      eager = net.apply(theta, state, grad, param, 1)
      compiled = tf.function(lambda s, g: net.apply(theta, s, g, param, 1),
                             jit_compile=True)(state, grad)
      self.assertAllClose(eager[0], compiled[0], rtol=1e-4, atol=1e-9)

  @parameterized.named_parameters(
      ("small_mode", {"small_mode": "lstm"}, "small_mode"),
      ("threshold", {"threshold": 0}, "threshold"),
      ("bool_threshold", {"threshold": True}, "threshold"),
      ("sub_field", {"coordinate": {"num_heads": 0}}, "num_heads"),
      ("unknown_sub_field", {"tensor": {"width": 3}}, "unknown TensorConfig fields"),
      ("early_boost", {"coordinate": {"early_boost": 4.0, "early_boost_steps": 10}},
       "early_boost is not available inside Super-Mnemosyne"))
  def test_invalid_config_raises_value_error(self, kwargs, message):
    with self.assertRaisesRegex(ValueError, message):
      super_network.SuperConfig(**kwargs)

  def test_theta_is_both_parts_under_their_prefixes(self):
    net = make()
    shapes = net.theta_shapes()
    self.assertEqual({n.split("/")[0] for n in shapes}, {"coordinate", "tensor"})
    self.assertEqual(len(shapes), len(net.parts["coordinate"].theta_shapes())
                     + len(net.parts["tensor"].theta_shapes()))
    # The fixed random-feature projections of both parts are never meta-trained.
    fixed = sorted(set(shapes) - set(net.trainable_names()))
    self.assertEqual(fixed, ["coordinate/cam0/projection", "tensor/cam/projection",
                             "tensor/hpe/block/projection"])


if __name__ == "__main__":
  tf.test.main()
