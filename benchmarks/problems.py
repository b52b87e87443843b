"""The benchmark's optimizee problems: small real models on data that installs
with Python packages (no download).

A problem is a fresh Keras 3 model (built from a seed), the variables an
optimizer trains, a stateless batch function (the same (seed, step) gives the
same batch for every optimizer) and held-out metrics. Problems that start from a
pre-trained checkpoint (ViT fine-tuning, the frozen seq2seq model under a soft
prompt) pre-train it once per process with Adam at a fixed seed and restore it
for every run, so every optimizer starts from the same weights.

  digits_mlp        MLP 128x128 GELU, sklearn digits (8x8), 10 classes
  digits_cnn        the demo CNN on digit images
  digits_vit_ft     tiny ViT pre-trained on digits 0-4, fine-tuned on 5-9
  digits_gru        GRU(32) reading a digit's 8 rows as a sequence
  text_mlm          BERT-tiny (2 blocks, width 32) masked-LM on the Python
                    reference manual (CPython's pydoc_data), word vocabulary
  seq2seq_prompt    T5-style encoder-decoder, frozen after pre-training on
                    copy / reverse / increment of digit strings; a soft prompt
                    of 4 x 32 is trained to make it reverse
  diabetes_mlp      tabular regression (sklearn's diabetes), MLP 64x64, MSE
"""

import collections
import dataclasses
import re
from typing import Callable, Dict, List

import keras
import numpy as np
import tensorflow as tf
from sklearn import datasets as sk_datasets
from sklearn.model_selection import train_test_split

from mnemosyne_tf import digits as digits_lib
from mnemosyne_tf.meta import tasks as tasks_lib


@dataclasses.dataclass
class Problem:
  """One optimizee, ready to train.

  Attributes:
    variables: the variables the optimizer updates (others stay frozen).
    batch: (seed [2] int32 tensor, step int32 tensor) -> (inputs, targets).
    loss: (inputs, targets) -> scalar training loss (runs the model).
    metrics: () -> held-out metrics, e.g. {"test_accuracy": 0.97}.
    frozen: variables the problem uses but never trains (e.g. the frozen
      model under a soft prompt).
  """
  variables: List[tf.Variable]
  batch: Callable
  loss: Callable
  metrics: Callable[[], Dict[str, float]]
  frozen: List[tf.Variable] = dataclasses.field(default_factory=list)


def _sampler(arrays, batch_size):
  """A stateless batch function over in-memory arrays (drawn with replacement)."""
  tensors = [tf.constant(a) for a in arrays]
  size = len(arrays[0])

  def batch(seed, step):
    index = tf.random.stateless_uniform([batch_size], tf.stack([seed[0], seed[1] + step]),
                                        maxval=size, dtype=tf.int32)
    return tuple(tf.gather(t, index) for t in tensors)
  return batch


def _xent(labels, logits):
  return tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(
      labels=tf.cast(labels, tf.int32), logits=logits))


def _accuracy(model, x, y) -> float:
  predictions = np.argmax(model(x, training=False).numpy(), axis=-1)
  return float(np.mean(predictions == y))


def _classifier_problem(model, x_train, y_train, x_test, y_test, batch_size):
  batch = _sampler([x_train, y_train], batch_size)
  return Problem(
      variables=list(model.trainable_variables), batch=batch,
      loss=lambda x, y: _xent(y, model(x, training=True)),
      metrics=lambda: {"test_accuracy": _accuracy(model, x_test, y_test)})


def _pretrain(variables, batch, loss, steps, learning_rate, seed=0):
  """Adam on `variables` (the checkpoint a fine-tuning problem starts from)."""
  optimizer = keras.optimizers.Adam(learning_rate)
  optimizer.build(variables)
  seed = tf.constant([seed, 0], tf.int32)

  @tf.function
  def run():
    for step in tf.range(steps):
      x, y = batch(seed, step)
      with tf.GradientTape() as tape:
        value = loss(x, y)
      optimizer.apply_gradients(zip(tape.gradient(value, variables), variables))
    return value
  return float(run())


# ---------------------------------------------------------------- digits
def digits_mlp(seed):
  x_train, y_train, x_test, y_test = digits_lib.load_split()
  keras.utils.set_random_seed(seed)
  spec = tasks_lib.TaskSpec("digits_mlp", "digits", "mlp", (128, 128), "gelu")
  model = tasks_lib.build_model(spec, (64,), 10)
  return _classifier_problem(model, x_train.reshape(-1, 64), y_train, x_test.reshape(-1, 64),
                             y_test, 128)


def digits_cnn(seed):
  x_train, y_train, x_test, y_test = digits_lib.load_split()
  keras.utils.set_random_seed(seed)
  return _classifier_problem(digits_lib.build_cnn(), x_train, y_train, x_test, y_test, 64)


def digits_gru(seed):
  x_train, y_train, x_test, y_test = digits_lib.load_split()
  keras.utils.set_random_seed(seed)
  model = keras.Sequential([keras.Input((8, 8)), keras.layers.GRU(32), keras.layers.Dense(10)],
                           name="digits_gru")
  return _classifier_problem(model, x_train.reshape(-1, 8, 8), y_train,
                             x_test.reshape(-1, 8, 8), y_test, 64)


_VIT_SPEC = tasks_lib.TaskSpec("digits_vit", "digits_images", "vit", (32,), "gelu")
_CHECKPOINTS = {}


def _vit_checkpoint():
  """A tiny ViT pre-trained on digits 0-4 (Adam 3e-3, 400 steps, seed 0)."""
  if "vit" not in _CHECKPOINTS:
    x_train, y_train, _, _ = digits_lib.load_split()
    first = y_train < 5
    keras.utils.set_random_seed(0)
    model = tasks_lib.build_model(_VIT_SPEC, (8, 8, 1), 10)
    _pretrain(model.trainable_variables, _sampler([x_train[first], y_train[first]], 64),
              lambda x, y: _xent(y, model(x, training=True)), 400, 3e-3)
    _CHECKPOINTS["vit"] = [v.numpy() for v in model.weights]
  return _CHECKPOINTS["vit"]


def digits_vit_ft(seed):
  weights = _vit_checkpoint()
  x_train, y_train, x_test, y_test = digits_lib.load_split()
  keras.utils.set_random_seed(seed)
  model = tasks_lib.build_model(_VIT_SPEC, (8, 8, 1), 10)
  model.set_weights(weights)
  last, last_test = y_train >= 5, y_test >= 5
  return _classifier_problem(model, x_train[last], y_train[last], x_test[last_test],
                             y_test[last_test], 64)


# ---------------------------------------------------------------- tabular
def diabetes_mlp(seed):
  x, y = sk_datasets.load_diabetes(return_X_y=True)
  x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=0.2, random_state=0)
  mean, std = x_train.mean(0), x_train.std(0)
  x_train, x_test = ((a - mean) / std for a in (x_train, x_test))
  y_mean, y_std = y_train.mean(), y_train.std()
  y_train, y_test = ((a - y_mean) / y_std for a in (y_train, y_test))
  x_train, x_test, y_train, y_test = (a.astype(np.float32)
                                      for a in (x_train, x_test, y_train, y_test))
  keras.utils.set_random_seed(seed)
  model = keras.Sequential([keras.Input((10,)), keras.layers.Dense(64, activation="relu"),
                            keras.layers.Dense(64, activation="relu"), keras.layers.Dense(1)],
                           name="diabetes_mlp")

  def mse(x, y):
    return tf.reduce_mean(tf.square(model(x, training=True)[:, 0] - y))

  return Problem(variables=list(model.trainable_variables),
                 batch=_sampler([x_train, y_train], 64), loss=mse,
                 metrics=lambda: {"test_mse": float(np.mean(
                     (model(x_test)[:, 0].numpy() - y_test) ** 2))})


# ---------------------------------------------------------------- text
PAD, UNK, MASK = 0, 1, 2
_TEXT = {}


def text_corpus(vocab_size=1000, length=32):
  """Token windows of the Python reference manual that ships with CPython:
  (train [N, length], test [M, length], vocabulary)."""
  key = (vocab_size, length)
  if key not in _TEXT:
    from pydoc_data import topics
    words = re.findall(r"[a-z_]+|[0-9]+|[^\sa-z_0-9]",
                       " ".join(topics.topics[k] for k in sorted(topics.topics)).lower())
    # Runs of one punctuation character (header underlines) are one token.
    words = [w for i, w in enumerate(words)
             if not (i and len(w) == 1 and not w.isalnum() and w == words[i - 1])]
    usable = len(words) // length * length
    split = int(usable // length * 0.9) * length
    counts = collections.Counter(words[:split])  # the vocabulary sees training text only
    vocabulary = ["[PAD]", "[UNK]", "[MASK]"] + [w for w, _ in counts.most_common(
        vocab_size - 3)]
    index = {w: i for i, w in enumerate(vocabulary)}
    ids = np.array([index.get(w, UNK) for w in words], np.int32)
    windows = ids[:usable].reshape(-1, length)
    _TEXT[key] = (windows[:split // length], windows[split // length:], vocabulary)
  return _TEXT[key]


class TransformerBlock(keras.layers.Layer):
  """Pre-norm transformer block: (causal or bidirectional) self-attention,
  optional cross-attention, GELU MLP."""

  def __init__(self, dim, heads=2, causal=False, cross=False, **kwargs):
    super().__init__(**kwargs)
    self.causal, self.cross = causal, cross
    self.norm1 = keras.layers.LayerNormalization()
    self.attention = keras.layers.MultiHeadAttention(heads, dim // heads)
    if cross:
      self.norm_cross = keras.layers.LayerNormalization()
      self.cross_attention = keras.layers.MultiHeadAttention(heads, dim // heads)
    self.norm2 = keras.layers.LayerNormalization()
    self.up = keras.layers.Dense(2 * dim, activation="gelu")
    self.down = keras.layers.Dense(dim)

  def call(self, x, context=None):
    h = self.norm1(x)
    x = x + self.attention(h, h, use_causal_mask=self.causal)
    if self.cross:
      x = x + self.cross_attention(self.norm_cross(x), context)
    return x + self.down(self.up(self.norm2(x)))


class TinyBert(keras.Model):
  """Token + position embeddings, `depth` bidirectional blocks, vocabulary logits."""

  def __init__(self, vocab_size, length, dim=32, depth=2, **kwargs):
    super().__init__(**kwargs)
    self.embed = keras.layers.Embedding(vocab_size, dim)
    self.position = keras.layers.Embedding(length, dim)
    self.blocks = [TransformerBlock(dim) for _ in range(depth)]
    self.norm = keras.layers.LayerNormalization()
    self.logits = keras.layers.Dense(vocab_size)
    self.length = length

  def call(self, tokens, training=False):
    x = self.embed(tokens) + self.position(tf.range(self.length))
    for block in self.blocks:
      x = block(x)
    return self.logits(self.norm(x))


def _mask(tokens, seed, rate=0.15):
  """BERT-style masking: (inputs with [MASK], where-masked as float)."""
  masked = tf.random.stateless_uniform(tf.shape(tokens), seed) < rate
  masked = tf.logical_and(masked, tokens > MASK)  # never [PAD], [UNK] or [MASK]
  return tf.where(masked, MASK, tokens), tf.cast(masked, tf.float32)


def text_mlm(seed):
  train, test, vocabulary = text_corpus()
  keras.utils.set_random_seed(seed)
  model = TinyBert(len(vocabulary), train.shape[1], name="text_mlm")
  model(train[:2])
  sample = _sampler([train], 32)

  def batch(seed_, step):
    (tokens,) = sample(seed_, step)
    inputs, weights = _mask(tokens, tf.stack([seed_[0] + 17, seed_[1] + step]))
    return inputs, (tokens, weights)

  def loss(inputs, target):
    tokens, weights = target
    per_token = tf.nn.sparse_softmax_cross_entropy_with_logits(
        labels=tokens, logits=model(inputs, training=True))
    return tf.reduce_sum(per_token * weights) / tf.maximum(tf.reduce_sum(weights), 1.0)

  test_inputs, test_weights = _mask(tf.constant(test), tf.constant([99, 0]))

  def metrics():
    predictions = tf.argmax(model(test_inputs), axis=-1, output_type=tf.int32)
    hits = tf.cast(predictions == test, tf.float32) * test_weights
    return {"test_masked_accuracy": float(tf.reduce_sum(hits) / tf.reduce_sum(test_weights))}

  return Problem(variables=list(model.trainable_variables), batch=batch, loss=loss,
                 metrics=metrics)


# ---------------------------------------------------------------- seq2seq prompt
_DIGITS, _BOS, _TASK_TOKENS, _SEQ_VOCAB = 10, 10, (11, 12, 13), 14
_SRC_LEN, _PROMPT_LEN = 6, 4


class TinySeq2Seq(keras.Model):
  """A T5-shaped encoder-decoder (one block each) that reads encoder inputs as
  embeddings, so a soft prompt can be prepended in embedding space."""

  def __init__(self, dim=32, **kwargs):
    super().__init__(**kwargs)
    self.dim = dim
    self.embed = keras.layers.Embedding(_SEQ_VOCAB, dim)
    self.enc_position = keras.layers.Embedding(_PROMPT_LEN + _SRC_LEN, dim)
    self.dec_position = keras.layers.Embedding(_SRC_LEN, dim)
    self.encoder = TransformerBlock(dim)
    self.decoder = TransformerBlock(dim, causal=True, cross=True)
    self.norm = keras.layers.LayerNormalization()
    self.logits = keras.layers.Dense(_SEQ_VOCAB)

  def call(self, prefix, source, decoder_tokens, training=False):
    """prefix: [B, PROMPT_LEN, dim] embeddings; source, decoder_tokens: [B, SRC_LEN]."""
    enc = tf.concat([prefix, self.embed(source)], axis=1)
    enc = self.encoder(enc + self.enc_position(tf.range(_PROMPT_LEN + _SRC_LEN)))
    dec = self.embed(decoder_tokens) + self.dec_position(tf.range(_SRC_LEN))
    return self.logits(self.norm(self.decoder(dec, context=enc)))


def _seq2seq_targets(source, task):
  """task 0: copy, 1: reverse, 2: increment mod 10 (per example)."""
  task = task[:, None]
  return tf.where(task == 0, source,
                  tf.where(task == 1, tf.reverse(source, [1]), (source + 1) % _DIGITS))


def _seq2seq_batch(seed, step, batch_size, tasks):
  key = tf.stack([seed[0], seed[1] + step])
  source = tf.random.stateless_uniform([batch_size, _SRC_LEN], key, maxval=_DIGITS,
                                       dtype=tf.int32)
  task = tf.random.stateless_uniform([batch_size], key + 1, maxval=len(tasks), dtype=tf.int32)
  task = tf.gather(tf.constant(tasks, tf.int32), task)
  target = _seq2seq_targets(source, task)
  decoder_in = tf.concat([tf.fill([batch_size, 1], _BOS), target[:, :-1]], axis=1)
  return (source, decoder_in, task), target


def _seq2seq_checkpoint():
  """The frozen model: pre-trained on all three tasks, each announced by its
  task token repeated PROMPT_LEN times (Adam 3e-3, 1,500 steps, seed 0)."""
  if "seq2seq" not in _CHECKPOINTS:
    keras.utils.set_random_seed(0)
    model = TinySeq2Seq()

    def batch(seed, step):
      return _seq2seq_batch(seed, step, 64, (0, 1, 2))

    def loss(inputs, target):
      source, decoder_in, task = inputs
      prefix = model.embed(tf.repeat(tf.gather(tf.constant(_TASK_TOKENS), task)[:, None],
                                     _PROMPT_LEN, axis=1))
      return _xent(target, model(prefix, source, decoder_in, training=True))

    (source, decoder_in, _), _ = batch(tf.constant([0, 0]), 0)
    model(tf.zeros([64, _PROMPT_LEN, model.dim]), source, decoder_in)  # builds the weights
    _pretrain(model.trainable_variables, batch, loss, 1500, 3e-3)
    _CHECKPOINTS["seq2seq"] = [v.numpy() for v in model.weights]
  return _CHECKPOINTS["seq2seq"]


def seq2seq_prompt(seed):
  weights = _seq2seq_checkpoint()
  model = TinySeq2Seq()
  (source, decoder_in, _), _ = _seq2seq_batch(tf.constant([0, 0]), 0, 2, (1,))
  model(tf.zeros([2, _PROMPT_LEN, model.dim]), source, decoder_in)
  model.set_weights(weights)
  model.trainable = False
  keras.utils.set_random_seed(seed)
  prompt = tf.Variable(tf.random.normal([_PROMPT_LEN, model.dim], stddev=0.5, seed=seed),
                       name="soft_prompt")

  def batch(seed_, step):
    (source, decoder_in, _), target = _seq2seq_batch(seed_, step, 64, (1,))
    return (source, decoder_in), target

  def forward(inputs):
    source, decoder_in = inputs
    prefix = tf.broadcast_to(prompt[None], [tf.shape(source)[0], _PROMPT_LEN, model.dim])
    return model(prefix, source, decoder_in)

  (test_source, test_decoder_in), test_target = batch(tf.constant([99, 0]), 0)

  def metrics():
    predictions = tf.argmax(forward((test_source, test_decoder_in)), -1, output_type=tf.int32)
    return {"test_token_accuracy_teacher_forced": float(tf.reduce_mean(
        tf.cast(predictions == test_target, tf.float32)))}

  return Problem(variables=[prompt], batch=batch,
                 loss=lambda inputs, target: _xent(target, forward(inputs)), metrics=metrics,
                 frozen=list(model.weights))


PROBLEMS = collections.OrderedDict([
    ("digits_mlp", digits_mlp),
    ("digits_cnn", digits_cnn),
    ("digits_vit_ft", digits_vit_ft),
    ("digits_gru", digits_gru),
    ("text_mlm", text_mlm),
    ("seq2seq_prompt", seq2seq_prompt),
    ("diabetes_mlp", diabetes_mlp),
])


def make(name: str, seed: int) -> Problem:
  if name not in PROBLEMS:
    raise ValueError(f"unknown benchmark problem {name!r}; known: {list(PROBLEMS)}")
  return PROBLEMS[name](seed)
