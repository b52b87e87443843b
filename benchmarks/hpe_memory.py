"""Peak memory of the Hierarchical Pooling Encoder against tensor size.

    python -m benchmarks.hpe_memory [--sizes=1e4,1e5,1e6,1e7,1e8]

Each size runs in a fresh subprocess: it creates the [2, N] token tensor (the
input, which any optimizer needs: it is the gradient's encoding), records the
resident set size, runs the compiled HPE once, and reports the peak resident
set size above that baseline: the encoder's working memory. With the first
level processed in groups of `group_chunks` chunks, the working memory should
stay flat as N grows (the input itself grows as 8 bytes per coordinate).
"""

import json
import os
import resource
import subprocess
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app  # noqa: E402
from absl import flags  # noqa: E402


def _child(n: int):
  import tensorflow as tf
  from mnemosyne_tf.core import hpe
  config = hpe.HpeConfig()
  theta = hpe.init_theta(config)
  tokens = tf.random.stateless_normal([config.token_dim, n], [0, 0])
  encode = tf.function(lambda t: hpe.encode(theta, t, config), jit_compile=False)
  concrete = encode.get_concrete_function(tf.TensorSpec([config.token_dim, n]))
  baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB, after tracing
  out, _ = concrete(tokens)
  out.numpy()
  peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
  print(json.dumps({"n": n, "input_mib": 8 * n / 2 ** 20,
                    "baseline_mib": baseline / 1024, "working_mib": (peak - baseline) / 1024}))


def define_flags():
  flags.DEFINE_list("sizes", ["1e4", "1e5", "1e6", "1e7", "1e8"], "Tensor sizes.")
  flags.DEFINE_integer("child", 0, "Internal: measure one size in this process.")


def main(argv):
  del argv
  if flags.FLAGS.child:
    _child(flags.FLAGS.child)
    return
  rows = []
  for size in flags.FLAGS.sizes:
    n = int(float(size))
    out = subprocess.run([sys.executable, "-m", "benchmarks.hpe_memory", f"--child={n}"],
                         capture_output=True, text=True, check=True)
    rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    print(f"N = {n:>11,d}: input {rows[-1]['input_mib']:8.1f} MiB, HPE working memory "
          f"{rows[-1]['working_mib']:8.1f} MiB", flush=True)
  print(json.dumps(rows))


if __name__ == "__main__":
  define_flags()
  app.run(main)
