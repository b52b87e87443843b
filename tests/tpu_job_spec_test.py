"""Tests of tpu.job_spec: the printed Cloud TPU VM commands (a dry run)."""

import contextlib
import dataclasses
import io
import os
import shlex
import subprocess
import sys

from absl.testing import flagsaver
from absl.testing import parameterized
import tensorflow as tf

from pipelines import train
from tests import pipeline_testing as pt
from tpu import job_spec

CONFIG = "configs/experiments/vit_finetuning_tiny.yaml"
JOB = job_spec.TpuJob(
    experiment=pt.EXPERIMENT, mode="train_and_eval", model_dir="gs://bucket/vit",
    tpu_name="my-tpu", zone="zone-a", accelerator_type="v4-8", config_files=(CONFIG,),
    params_override="trainer.train_steps=7", source_dir=pt.ROOT)


def _scripted(text):
  """The argv of every command line of a printed script (comments dropped)."""
  return [shlex.split(line) for line in text.splitlines() if line and not line.startswith("#")]


class JobSpecTest(tf.test.TestCase, parameterized.TestCase):

  def test_create_copy_install_run_delete_in_order(self):
    create, copy, install, run, delete = _scripted(job_spec.render(JOB))
    tpu_vm = ["gcloud", "compute", "tpus", "tpu-vm"]
    self.assertEqual(create, tpu_vm + [
        "create", "my-tpu", "--zone=zone-a", "--accelerator-type=v4-8",
        f"--version=tpu-vm-tf-{tf.__version__}-pjrt"])
    self.assertEqual(copy, tpu_vm + ["scp", "--recurse", "--zone=zone-a", "--worker=all",
                                     os.path.join(pt.ROOT, ""), "my-tpu:~/mnemosyne-tf"])
    self.assertEqual(install[:8], tpu_vm + ["ssh", "my-tpu", "--zone=zone-a", "--worker=all"])
    self.assertEqual(install[8], "--command=cd ~/mnemosyne-tf && python3 -m pip install -e .")
    self.assertEqual(delete, tpu_vm + ["delete", "my-tpu", "--zone=zone-a", "--quiet"])
    self.assertEqual(run[:8], tpu_vm + ["ssh", "my-tpu", "--zone=zone-a", "--worker=all"])
    prefix = "--command=cd ~/mnemosyne-tf && "
    self.assertTrue(run[8].startswith(prefix))
    self.assertEqual(shlex.split(run[8][len(prefix):]), [
        "python3", "-m", "pipelines.train", f"--experiment={pt.EXPERIMENT}",
        "--mode=train_and_eval", "--model_dir=gs://bucket/vit", f"--config_file={CONFIG}",
        "--params_override=trainer.train_steps=7", "--tpu=local"])

  def test_the_run_command_is_one_pipelines_train_accepts(self):
    run = _scripted(job_spec.render(JOB))[3]
    argv = shlex.split(run[8].split(" && ", 1)[1])
    values = dict(arg[2:].split("=", 1) for arg in argv[3:])
    params = train.parse_config(values["experiment"],
                                [os.path.join(pt.ROOT, values["config_file"])],
                                values["params_override"], values["tpu"])
    self.assertEqual(params.trainer.train_steps, 7)
    self.assertEqual(params.runtime.tpu, "local")

  def test_pod_slice_project_spot_and_version(self):
    job = dataclasses.replace(JOB, accelerator_type="v4-32", project="proj", spot=True)
    create, _, _, run, delete = _scripted(job_spec.render(job))
    self.assertIn("--version=tpu-vm-tf-%s-pod-pjrt" % tf.__version__, create)
    self.assertIn("--spot", create)
    self.assertIn("--project=proj", create)
    self.assertIn("--project=proj", delete)
    self.assertTrue(run[-1].endswith("--tpu=my-tpu"))  # several hosts: resolved by name
    self.assertEqual(job_spec.train_command(dataclasses.replace(JOB, runtime_version="v"))[-1],
                     "--tpu=local")

  @parameterized.named_parameters(
      ("local_model_dir", dict(model_dir="/tmp/x"), "must be a gs:// path"),
      ("bad_accelerator", dict(accelerator_type="tpu8"), "is not like v4-8"),
      ("bad_name", dict(tpu_name="My_TPU"), "--tpu_name 'My_TPU'"),
      ("missing_zone", dict(zone=""), "--zone is required"),
      ("config_outside_repo", dict(config_files=("/etc/x.yaml",)),
       "must be a path inside --source_dir"),
      ("unknown_experiment", dict(experiment="nope/x"), "unknown experiment"),
      ("bad_override", dict(params_override="task.nope=1"), "nope"),
  )
  def test_bad_jobs_are_refused(self, change, message):
    with self.assertRaisesRegex(ValueError, message):
      job_spec.check(dataclasses.replace(JOB, **change))

  def test_command_line(self):
    out = subprocess.run(
        [sys.executable, "-m", "tpu.job_spec", f"--experiment={pt.EXPERIMENT}",
         f"--config_file={CONFIG}", "--tpu_name=my-tpu", "--zone=zone-a",
         "--accelerator_type=v4-8", "--model_dir=gs://bucket/vit"],
        cwd=pt.ROOT, env=dict(os.environ, PYTHONPATH=pt.ROOT), capture_output=True,
        text=True, check=False)
    self.assertEqual(out.returncode, 0, out.stderr[-2000:])
    self.assertEqual(len(_scripted(out.stdout)), 5)
    self.assertIn("--mode=train_and_eval", out.stdout)

  def test_command_line_refuses_a_bad_job_and_prints_nothing(self):
    stdout = io.StringIO()
    with flagsaver.flagsaver(experiment=pt.EXPERIMENT, tpu_name="my-tpu", zone="zone-a",
                             accelerator_type="v4-8", model_dir="runs/local"):
      with contextlib.redirect_stdout(stdout), self.assertRaises(SystemExit) as exited:
        job_spec.main(["job_spec"])
    self.assertIn("must be a gs:// path", str(exited.exception.code))
    self.assertEqual(stdout.getvalue(), "")

if __name__ == "__main__":
  tf.test.main()
