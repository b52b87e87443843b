"""Early boost (b at step 1, decaying linearly to 1 by step s) applied to the
per-step change of chosen tensor classes only; rank-3 kernels never boosted."""
import sys, time
import tensorflow as tf
import mnemosyne_tf
from mnemosyne_tf.meta import evaluate, tasks as tasks_lib

CLASSES = {
    "none": lambda p, r: False,
    "all": lambda p, r: r != 3,
    "emb": lambda p, r: "embedding" in p,
    "ln": lambda p, r: "layer_normalization" in p,
    "dense": lambda p, r: "dense" in p,
    "attn_bias": lambda p, r: "multi_head_attention" in p and r != 3,
    "not_emb": lambda p, r: r != 3 and "embedding" not in p,
    "not_ln": lambda p, r: r != 3 and "layer_normalization" not in p,
    "rank2plus": lambda p, r: r >= 2 and r != 3,
    "rank1": lambda p, r: r <= 1,
}

def run(task_name, cls, b, s, steps):
  task = tasks_lib.Task(tasks_lib.get_spec(task_name))
  holder = {}
  def make():
    holder["opt"] = mnemosyne_tf.LearnedOptimizer(weights="coordinate_v24")
    return holder["opt"]
  pred = CLASSES[cls]
  def after(variables, grads, before):
    t = tf.cast(holder["opt"].iterations, tf.float32)
    f = 1.0 + (b - 1.0) * tf.maximum(0.0, 1.0 - t / s)
    for v, old in zip(variables, before):
      if pred(v.path, len(v.shape)):
        v.assign(old + f * (v - old))
  curve = evaluate.train_curve(task, make, steps, 0, 200, jit_compile=True,
                               after_update=None if cls == "none" else after)
  return evaluate.loss_at(curve, 200), evaluate.loss_at(curve, steps)

tasks, classes, b, s = sys.argv[1].split(","), sys.argv[2].split(","), float(sys.argv[3]), float(sys.argv[4])
steps = int(sys.argv[5]) if len(sys.argv) > 5 else 2000
for t in tasks:
  for c in classes:
    t0 = time.time()
    l1, l2 = run(t, c, b, s, steps)
    print(f"{t} {c} b={b} s={s}: {l1:.4g} @200  {l2:.4g} @{steps}  ({time.time()-t0:.0f}s)", flush=True)
