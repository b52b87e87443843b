"""The tensor-wise memory benchmark's harness (smoke test): one tiny size of each
measurement in its own process, and the JSON and markdown it writes."""

import json
import os
import subprocess
import sys

import tensorflow as tf

from benchmarks import hpe_memory


class HpeMemoryHarnessTest(tf.test.TestCase):

  def test_tiny_run_writes_every_row(self):
    if not os.access("/proc/self/clear_refs", os.W_OK):
      self.skipTest("needs Linux's /proc/self/clear_refs to reset the peak memory")
    out_dir = self.create_tempdir().full_path
    n = 4096
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks.hpe_memory", f"--sizes={n}", "--what=hpe,update",
         f"--out_dir={out_dir}"], capture_output=True, text=True, timeout=600)
    self.assertEqual(result.returncode, 0, result.stderr[-3000:])
    with open(os.path.join(out_dir, "hpe_memory.json")) as fh:
      saved = json.load(fh)
    rows = saved["rows"]
    self.assertEqual([(r["what"], r["n"]) for r in rows], [("hpe", n), ("update", n)])
    # Inputs: a [2, N] float32 token tensor for the HPE, an N-float gradient.
    self.assertAllClose([r["input_mib"] for r in rows], [2 * 4 * n / 2 ** 20, 4 * n / 2 ** 20])
    for r in rows:
      self.assertGreaterEqual(r["working_mib"], 0.0)  # a peak is never below the baseline
      self.assertAllClose(r["working_bytes_per_coordinate"], r["working_mib"] * 2 ** 20 / n,
                          rtol=1e-6)
    self.assertIn("python -m benchmarks.hpe_memory", saved["meta"]["command"])
    with open(os.path.join(out_dir, "hpe_memory.md")) as fh:
      text = fh.read()
    self.assertEqual(text, hpe_memory.markdown(rows, saved["meta"]) + "\n")

  def test_markdown_has_a_row_per_measurement(self):
    rows = [{"what": "hpe", "n": 1000000, "input_mib": 7.63, "working_mib": 44.04,
             "working_bytes_per_coordinate": 46.2}]
    text = hpe_memory.markdown(rows, {"date": "d", "machine": "m", "command": "c"})
    self.assertIn("| hpe | 1,000,000 | 7.6 | 44.0 | 46.2 |", text)
    self.assertIn("command: `c`", text)


if __name__ == "__main__":
  tf.test.main()
