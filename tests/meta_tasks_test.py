"""Optimizee tasks: the split, determinism, and functional losses."""

import numpy as np
import tensorflow as tf
from sklearn import datasets

from mnemosyne_tf.meta import config as config_lib
from mnemosyne_tf.meta import tasks


class TasksTest(tf.test.TestCase):

  def test_split_is_disjoint_and_held_out_covers_other_architectures(self):
    train = {s.name for s in tasks.META_TRAIN}
    held = {s.name for s in tasks.HELD_OUT}
    fresh = {s.name for s in tasks.HELD_OUT_FRESH}
    self.assertEmpty(train & held)
    self.assertEmpty(fresh & (train | held))
    self.assertEqual(len(tasks.HELD_OUT_FRESH), 2)
    confirm = {s.name for s in tasks.HELD_OUT_CONFIRM}
    self.assertEmpty(confirm & (train | held | fresh))
    self.assertLen(confirm, 3)
    layout = {s.name for s in tasks.HELD_OUT_LAYOUT}
    self.assertEmpty(layout & (train | held | fresh | confirm))
    self.assertLen(layout, 4)
    # Attempt 26's set has models with attention and models without.
    self.assertEqual({tasks.has_attention(s) for s in tasks.HELD_OUT_LAYOUT}, {True, False})
    self.assertEqual({s.name for s in tasks.ALL_HELD_OUT}, held | fresh | confirm | layout)
    self.assertIn("vit", {s.model for s in tasks.HELD_OUT})
    self.assertNotIn("vit", {s.model for s in tasks.META_TRAIN})
    self.assertNotIn("breast_cancer", {s.dataset for s in tasks.META_TRAIN})

  def test_every_task_computes_the_same_loss_as_its_keras_model(self):
    for spec in tasks.META_TRAIN + tasks.ALL_HELD_OUT:
      task = tasks.Task(spec)
      params = task.init_params(3)
      for var, value in zip(task.model.trainable_variables, params):
        var.assign(value)
      x, y = task.batches(tf.constant([0, 1]), 1)
      logits = task.model(x[0])
      per_token = tf.nn.sparse_softmax_cross_entropy_with_logits(y[0], logits)
      if spec.model == "mlm":  # the mean over the masked tokens only
        masked = tf.cast(tf.equal(x[0], task.num_classes - 1), tf.float32)
        want = tf.reduce_sum(per_token * masked) / tf.reduce_sum(masked)
      else:
        want = tf.reduce_mean(per_token)
      self.assertAllClose(task.loss(params, x[0], y[0]), want, rtol=1e-5, msg=spec.name)
      self.assertEqual(x.shape[1], spec.batch_size)

  def test_inits_and_batches_are_deterministic(self):
    task = tasks.Task(tasks.get_spec("wine_mlp_32_relu"))
    a, b, c = task.init_params(1), task.init_params(1), task.init_params(2)
    for x, y in zip(a, b):
      self.assertAllEqual(x, y)
    self.assertNotAllClose(a[0], c[0])
    scaled = task.init_params(1, init_scale=2.0)
    self.assertAllClose(scaled[0], 2.0 * a[0])
    self.assertAllEqual(task.batches(tf.constant([4, 5]), 3)[0],
                        task.batches(tf.constant([4, 5]), 3)[0])

  def test_tabular_features_are_standardized(self):
    x, _, classes = tasks.load_dataset("breast_cancer")
    self.assertEqual(classes, 2)
    self.assertAllClose(x.mean(0), np.zeros(x.shape[1]), atol=1e-5)

  def test_next_token_datasets_shift_a_contiguous_text_by_one(self):
    for name in tasks.TEXT_DATASETS:
      x, y, vocabulary = tasks.load_dataset(name)
      self.assertEqual(x.shape, y.shape)
      self.assertEqual(x.shape[1], tasks.TEXT_WINDOW)
      # y is x one token later: within a window, and across window boundaries.
      self.assertAllEqual(x[:, 1:], y[:, :-1], msg=name)
      self.assertAllEqual(y[:-1, -1], x[1:, 0], msg=name)
      self.assertEqual(x.dtype, np.int32)
      self.assertGreaterEqual(int(min(x.min(), y.min())), 0)
      self.assertLess(int(max(x.max(), y.max())), vocabulary)
      self.assertLess(float(np.mean(x == 0)), 0.2, msg=f"{name}: share of id 0 (unknown)")
    _, _, words = tasks.load_dataset("stdlib_words")
    self.assertEqual(words, tasks.STDLIB_VOCABULARY + 1)

  def test_stdlib_chars_spell_the_docstrings_and_share_no_window_with_held_out_text(self):
    x, y, vocabulary = tasks.load_dataset("stdlib_chars")
    text = " ".join(tasks._stdlib_docstrings().split())
    self.assertGreater(len(text), tasks.STDLIB_CHARS)  # the truncation is in effect
    # Decoded with the vocabulary read off the text in order of first appearance,
    # the windows are the text's first characters, in order.
    characters = list(dict.fromkeys(text[:tasks.STDLIB_CHARS]))
    self.assertEqual(vocabulary, len(characters))
    decoded = "".join(characters[i] for i in x.reshape(-1))
    self.assertEqual(decoded, text[:len(decoded)])
    self.assertGreater(len(decoded), tasks.STDLIB_CHARS - tasks.TEXT_WINDOW - 1)
    # Meta-training on it reads none of the held-out character LM's text.
    descr_text = " ".join(" ".join(getattr(datasets, f"load_{name}")().DESCR.split())
                          for name in ("iris", "digits", "wine", "breast_cancer", "diabetes",
                                       "linnerud"))
    windows = {decoded[i:i + tasks.TEXT_WINDOW]
               for i in range(0, len(decoded) - tasks.TEXT_WINDOW, 7)}
    self.assertFalse(any(window in descr_text for window in windows))
    spec = tasks.get_spec("stdlib_clm_64")
    self.assertIn(spec, tasks.META_TRAIN)
    self.assertNotIn(spec.dataset, {s.dataset for s in tasks.ALL_HELD_OUT})

  def test_masked_words_mask_about_the_stated_fraction_of_stdlib_words(self):
    x, y, vocabulary = tasks.load_dataset("stdlib_words_masked")
    words, _, word_vocabulary = tasks.load_dataset("stdlib_words")
    self.assertEqual(vocabulary, word_vocabulary + 1)  # the mask id is the last
    self.assertAllEqual(y, words)
    masked = x == vocabulary - 1
    self.assertAllEqual(x[~masked], y[~masked])
    self.assertAllClose(masked.mean(), tasks.MASK_RATE, atol=0.01)
    self.assertFalse(np.any(y == vocabulary - 1))

  def test_masked_lm_batches_draw_fresh_masks_and_its_loss_reads_only_them(self):
    task = tasks.Task(tasks.get_spec("stdlib_mlm_32x32"))
    mask_id = task.num_classes - 1
    x, y = task.batches(tf.constant([3, 4]), 2)
    x, y = x.numpy(), y.numpy()
    masked = x == mask_id
    self.assertAllEqual(x[~masked], y[~masked])
    self.assertAllClose(masked.mean(), tasks.MASK_RATE, atol=0.03)
    self.assertFalse(np.array_equal(masked[0], masked[1]))  # fresh per batch
    self.assertAllEqual(task.batches(tf.constant([3, 4]), 2)[0], x)  # deterministic
    # The loss, against numpy's cross-entropy over the masked tokens only: a
    # change of an unmasked token's label leaves it unchanged.
    params = task.init_params(1, init_scale=4.0)  # logits far from uniform
    logits = task.model.stateless_call(params, [], x[0])[0].numpy().astype(np.float64)
    log_p = logits - np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(
        -1, keepdims=True)) - logits.max(-1, keepdims=True)
    ce = -np.take_along_axis(log_p, y[0][..., None], -1)[..., 0]
    want = ce[masked[0]].mean()
    self.assertAllClose(task.loss(params, x[0], y[0]), want, rtol=1e-5)
    other = y[0].copy()
    other[~masked[0]] = (other[~masked[0]] + 1) % (mask_id - 1)
    self.assertAllClose(task.loss(params, x[0], other), want, rtol=1e-5)
    other_ce = -np.take_along_axis(log_p, other[..., None], -1)[..., 0]
    self.assertGreater(abs(other_ce.mean() - ce.mean()), 0.05)  # a mean over all would move

  def test_noisy_digits_replace_about_the_stated_fraction_of_labels(self):
    x, clean, _ = tasks.load_dataset("digits")
    noisy_x, noisy, classes = tasks.load_dataset("digits_noisy")
    self.assertAllEqual(x, noisy_x)
    self.assertEqual(classes, 10)
    # A replaced label is a uniform draw: it differs from the clean one 9 times in 10.
    changed = float(np.mean(noisy != clean))
    self.assertAllClose(changed, 0.9 * tasks.NOISY_LABEL_FRACTION, atol=0.03)
    self.assertAllEqual(noisy, tasks.load_dataset("digits_noisy")[1])

  def test_feature_tokens_embed_each_feature_with_its_own_weights(self):
    task = tasks.Task(tasks.get_spec("wine_ft_16"))
    layer = task.model.get_layer("feature_tokens")
    x = task.x[:5].numpy()
    scale, bias = layer.scale.numpy(), layer.bias.numpy()
    want = np.stack([[x[b, f] * scale[f] + bias[f] for f in range(x.shape[1])]
                     for b in range(5)])
    self.assertAllClose(layer(task.x[:5]), want, rtol=1e-6)

  def test_language_model_is_causal(self):
    task = tasks.Task(tasks.get_spec("descr_lm_32"))
    params = task.init_params(0)
    tokens = task.x[:2].numpy()
    changed = tokens.copy()
    changed[:, 20] = (changed[:, 20] + 1) % task.num_classes
    before, _ = task.model.stateless_call(params, [], tf.constant(tokens))
    after, _ = task.model.stateless_call(params, [], tf.constant(changed))
    self.assertEqual(before.shape, (2, tasks.TEXT_WINDOW, task.num_classes))
    self.assertAllClose(before[:, :20], after[:, :20], atol=1e-6)
    self.assertNotAllClose(before[:, 20:], after[:, 20:])

  def test_models_refuse_data_they_cannot_read(self):
    with self.assertRaisesRegex(ValueError, "model 'ft' needs tabular data"):
      tasks.build_model(tasks.TaskSpec("x", "digits_images", "ft", (8,)), (8, 8, 1), 10)
    with self.assertRaisesRegex(ValueError, "model 'lm' needs a text dataset"):
      tasks.build_model(tasks.TaskSpec("x", "digits", "lm", (8,)), (64,), 10)

  def test_default_tasks_are_the_first_seven(self):
    self.assertEqual(config_lib.MetaTrainConfig().tasks, tasks.DEFAULT_TASKS)
    self.assertEqual(tasks.DEFAULT_TASKS, (
        "digits_mlp_32_relu", "digits_mlp_64x64_tanh", "wine_mlp_32_relu", "digits_cnn_8x16",
        "iris_mlp_16_relu", "digits_mlp_32x32x32_elu", "wine_mlp_64x64_sigmoid"))

  def test_unknown_names_raise(self):
    with self.assertRaisesRegex(ValueError, "unknown task"):
      tasks.get_spec("mnist")
    with self.assertRaisesRegex(ValueError, "unknown dataset"):
      tasks.load_dataset("mnist")


if __name__ == "__main__":
  tf.test.main()
