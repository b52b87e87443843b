"""Peak memory of tensor-wise Mnemosyne against tensor size.

    python -m benchmarks.hpe_memory [--sizes=1e4,1e5,1e6,1e7,1e8] [--what=hpe,update]

Each (size, what) runs in a fresh subprocess. It creates its input, runs the
computation once (tracing, XLA compilation), resets the kernel's peak
resident set size (/proc/self/clear_refs; Linux), runs it again and reports
the peak above the resident set size before that run: the working memory.
  * hpe: the Hierarchical Pooling Encoder alone on a [2, N] token tensor (the
    input: 8 bytes per coordinate). With every level processed in groups of
    `group_chunks` chunks, its working memory should stay flat as N grows.
  * update: one whole tensor-wise optimizer step (features, HPE, CAM, SPE, the
    per-coordinate head in groups, normalization), compiled with XLA as the
    optimizer runs it, on a gradient of N floats (4 bytes per coordinate). Its
    output is an N-float update and it needs the N-coordinate features, so
    its working memory grows linearly; bounded means a fixed number of bytes
    per coordinate whatever N (no hidden-layer-sized [16, N] intermediate).
"""

import datetime
import json
import os
import platform
import subprocess
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app  # noqa: E402
from absl import flags  # noqa: E402


def _status_kib(field: str) -> int:
  """A field of /proc/self/status, in KiB (VmRSS: resident now; VmHWM: peak)."""
  with open("/proc/self/status") as f:
    for line in f:
      if line.startswith(field + ":"):
        return int(line.split()[1])
  raise RuntimeError(f"/proc/self/status has no {field}")


def _child(n: int, what: str):
  import tensorflow as tf
  if what == "hpe":
    from mnemosyne_tf.core import hpe
    config = hpe.HpeConfig()
    theta = hpe.init_theta(config)
    inputs = tf.random.stateless_normal([config.token_dim, n], [0, 0])
    run = tf.function(lambda t: hpe.encode(theta, t, config)[0], jit_compile=False)
  else:
    from mnemosyne_tf.core import tensor_network
    net = tensor_network.TensorWiseNetwork(tensor_network.TensorConfig())
    theta = net.init_theta(0)
    state = net.init_state(tf.zeros([1]))
    param = tf.zeros([n])
    inputs = tf.random.stateless_normal([n], [0, 0])
    run = tf.function(lambda g: net.apply(theta, state, g, param, 1)[0], jit_compile=True)
  run(inputs).numpy()  # trace and compile outside the measurement
  with open("/proc/self/clear_refs", "w") as f:
    f.write("5")  # resets the peak resident set size to the current one
  baseline = _status_kib("VmRSS")
  run(inputs).numpy()
  peak = _status_kib("VmHWM")
  input_bytes = inputs.shape.num_elements() * 4
  print(json.dumps({"what": what, "n": n, "input_mib": input_bytes / 2 ** 20,
                    "baseline_mib": baseline / 1024, "working_mib": (peak - baseline) / 1024,
                    "working_bytes_per_coordinate": (peak - baseline) * 1024 / n}))


def define_flags():
  flags.DEFINE_list("sizes", ["1e4", "1e5", "1e6", "1e7", "1e8"], "Tensor sizes.")
  flags.DEFINE_list("what", ["hpe", "update"], "What to measure: hpe, update.")
  flags.DEFINE_integer("child", 0, "Internal: measure one size in this process.")
  flags.DEFINE_string("out_dir", None, "Outputs (default benchmarks/results/hpe_memory).")


def markdown(rows, meta) -> str:
  lines = [f"Working memory of tensor-wise Mnemosyne, {meta['date']} on {meta['machine']}; "
           f"command: `{meta['command']}`. Peak resident memory of a second run above the "
           "resident memory before it, one process per row.", "",
           "| what | coordinates | input (MiB) | working memory (MiB) | bytes per coordinate |",
           "|---|---|---|---|---|"]
  for r in rows:
    lines.append(f"| {r['what']} | {r['n']:,d} | {r['input_mib']:.1f} | {r['working_mib']:.1f} "
                 f"| {r['working_bytes_per_coordinate']:.1f} |")
  return "\n".join(lines)


def write_results(rows, meta, out_dir):
  os.makedirs(out_dir, exist_ok=True)
  with open(os.path.join(out_dir, "hpe_memory.json"), "w") as fh:
    json.dump({"meta": meta, "rows": rows}, fh, indent=1)
  text = markdown(rows, meta)
  with open(os.path.join(out_dir, "hpe_memory.md"), "w") as fh:
    fh.write(text + "\n")
  return text


def main(argv):
  del argv
  if flags.FLAGS.child:
    _child(flags.FLAGS.child, flags.FLAGS.what[0])
    return
  rows = []
  for what in flags.FLAGS.what:
    for size in flags.FLAGS.sizes:
      n = int(float(size))
      out = subprocess.run([sys.executable, "-m", "benchmarks.hpe_memory", f"--child={n}",
                            f"--what={what}"], capture_output=True, text=True, check=True)
      rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
      print(f"{what:6s} N = {n:>11,d}: input {rows[-1]['input_mib']:8.1f} MiB, working "
            f"memory {rows[-1]['working_mib']:8.1f} MiB "
            f"({rows[-1]['working_bytes_per_coordinate']:.1f} bytes/coordinate)", flush=True)
  meta = {"date": datetime.date.today().isoformat(),
          "machine": f"{platform.machine()}, {os.cpu_count()} cores, "
                     f"Python {platform.python_version()}",
          "command": "python -m benchmarks.hpe_memory " + " ".join(sys.argv[1:])}
  out_dir = flags.FLAGS.out_dir or os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                                "results", "hpe_memory")
  print(write_results(rows, meta, out_dir))
  print(f"wrote {out_dir}/hpe_memory.{{json,md}}")


if __name__ == "__main__":
  define_flags()
  app.run(main)
