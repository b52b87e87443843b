"""Tests of tpu.job_spec: the printed Cloud TPU VM commands (a dry run)."""

import dataclasses
import os
import shlex

from absl.testing import parameterized
import tensorflow as tf

from pipelines import train
from tests import pipeline_testing as pt
from tests import testing
from tpu import job_spec

CONFIG = "configs/experiments/vit_finetuning_tiny.yaml"
JOB = job_spec.TpuJob(
    experiment=pt.EXPERIMENT, mode="train_and_eval", model_dir="gs://bucket/vit",
    tpu_name="my-tpu", zone="zone-a", accelerator_type="v4-8", config_files=(CONFIG,),
    params_override="trainer.train_steps=7", source_dir=pt.ROOT)


def _scripted(text):
  """The argv of every command line of a printed script (comments dropped)."""
  return [shlex.split(line) for line in text.splitlines() if line and not line.startswith("#")]


def _run_command(argv):
  """(environment assignments, pipelines.train argv) of a run's --command."""
  words = shlex.split(argv[-1][len("--command="):].split(" && ", 1)[1])
  split = next(i for i, word in enumerate(words) if "=" not in word)
  return dict(word.split("=", 1) for word in words[:split]), words[split:]


class JobSpecTest(tf.test.TestCase, parameterized.TestCase):

  def test_create_pack_copy_install_run_delete_in_order(self):
    create, pack, copy, install, run, delete = _scripted(job_spec.render(JOB))
    tpu_vm = ["gcloud", "compute", "tpus", "tpu-vm"]
    self.assertEqual(create, tpu_vm + [
        "create", "my-tpu", "--zone=zone-a", "--accelerator-type=v4-8",
        f"--version=tpu-vm-tf-{tf.__version__}-pjrt"])
    self.assertEqual(pack[:5], ["tar", "-czf", "mnemosyne-tf.tar.gz", "-C", pt.ROOT])
    self.assertEqual(copy, tpu_vm + ["scp", "mnemosyne-tf.tar.gz", "my-tpu:~/",
                                     "--zone=zone-a", "--worker=all"])
    self.assertEqual(install, tpu_vm + [
        "ssh", "my-tpu", "--zone=zone-a", "--worker=all",
        "--command=mkdir -p ~/mnemosyne-tf && tar -xzf ~/mnemosyne-tf.tar.gz -C "
        "~/mnemosyne-tf && cd ~/mnemosyne-tf && python3 -m pip install -e ."])
    self.assertEqual(delete, tpu_vm + ["delete", "my-tpu", "--zone=zone-a", "--quiet"])
    # One host: every worker (the one) runs it on its attached TPU, PJRT plugin on.
    self.assertEqual(run[:8], tpu_vm + ["ssh", "my-tpu", "--zone=zone-a", "--worker=all"])
    self.assertTrue(run[8].startswith("--command=cd ~/mnemosyne-tf && "))
    environment, argv = _run_command(run)
    self.assertEqual(environment, {"NEXT_PLUGGABLE_DEVICE_USE_C_API": "true",
                                   "TF_PLUGGABLE_DEVICE_LIBRARY_PATH": "/lib/libtpu.so"})
    self.assertEqual(argv, [
        "python3", "-m", "pipelines.train", f"--experiment={pt.EXPERIMENT}",
        "--mode=train_and_eval", "--model_dir=gs://bucket/vit", f"--config_file={CONFIG}",
        "--params_override=trainer.train_steps=7", "--tpu=local"])

  def test_the_archive_holds_the_sources_only(self):
    pack = _scripted(job_spec.render(JOB))[1]
    excluded = {arg.split("=", 1)[1] for arg in pack if arg.startswith("--exclude=")}
    self.assertContainsSubset({".venv", ".git", "runs", "bazel-*"}, excluded)
    self.assertEqual(pack[-1], ".")

  def test_the_run_command_is_one_pipelines_train_accepts(self):
    _, argv = _run_command(_scripted(job_spec.render(JOB))[4])
    values = dict(arg[2:].split("=", 1) for arg in argv[3:])
    params = train.parse_config(values["experiment"],
                                [os.path.join(pt.ROOT, values["config_file"])],
                                values["params_override"], values["tpu"])
    self.assertEqual(params.trainer.train_steps, 7)
    self.assertEqual(params.runtime.tpu, "local")

  def test_pod_slice_runs_one_client_on_worker_0_project_spot_and_version(self):
    job = dataclasses.replace(JOB, accelerator_type="v4-32", project="proj", spot=True)
    create, _, copy, install, run, delete = _scripted(job_spec.render(job))
    self.assertIn("--version=tpu-vm-tf-%s-pod-pjrt" % tf.__version__, create)
    self.assertIn("--spot", create)
    for command in (create, copy, install, run, delete):
      self.assertIn("--project=proj", command)
    self.assertIn("--worker=all", install)  # every host gets the sources
    self.assertIn("--worker=0", run)  # one TensorFlow client drives the slice
    self.assertNotIn("--worker=all", run)
    environment, argv = _run_command(run)
    self.assertEqual(environment, {"TPU_NAME": "my-tpu", "TPU_LOAD_LIBRARY": "0"})
    self.assertEqual(argv[-1], "--tpu=my-tpu")  # several hosts: resolved by name
    # A given runtime that is not PJRT: no PJRT plugin variables.
    single = dataclasses.replace(JOB, runtime_version="tpu-vm-tf-2.16.1")
    self.assertEqual(job_spec.train_environment(single), [])
    self.assertEqual(job_spec.train_command(single)[-1], "--tpu=local")

  @parameterized.named_parameters(
      ("local_model_dir", dict(model_dir="/tmp/x"), "must be a gs:// path"),
      ("bad_accelerator", dict(accelerator_type="tpu8"), "is not like v4-8"),
      ("bad_name", dict(tpu_name="My_TPU"), "--tpu_name 'My_TPU'"),
      ("missing_zone", dict(zone=""), "--zone is required"),
      ("config_outside_repo", dict(config_files=("/etc/x.yaml",)),
       "must be a path inside --source_dir"),
      ("unknown_experiment", dict(experiment="nope/x"), "unknown experiment"),
      ("bad_override", dict(params_override="task.nope=1"), "nope"),
      ("strategy_that_is_not_tpu",
       dict(params_override="runtime.distribution_strategy=mirrored"),
       "--tpu=local is given but the distribution strategy is 'mirrored'"),
  )
  def test_bad_jobs_are_refused(self, change, message):
    with self.assertRaisesRegex(ValueError, message):
      job_spec.check(dataclasses.replace(JOB, **change))

  def _main(self, **flag_values):
    """job_spec.main on a job of my-tpu (v4-8) with these flags: (stdout,
    SystemExit or None)."""
    return testing.run_main(job_spec.main, experiment=pt.EXPERIMENT, tpu_name="my-tpu",
                            zone="zone-a", accelerator_type="v4-8", **flag_values)

  def test_command_line(self):
    stdout, exited = self._main(config_file=[CONFIG], model_dir="gs://bucket/vit")
    self.assertIsNone(exited)
    self.assertLen(_scripted(stdout), 6)
    self.assertIn("--mode=train_and_eval", stdout)

  def test_command_line_refuses_a_bad_job_and_prints_nothing(self):
    stdout, exited = self._main(model_dir="runs/local")
    self.assertIn("must be a gs:// path", str(exited.code))
    self.assertEqual(stdout, "")


if __name__ == "__main__":
  tf.test.main()
