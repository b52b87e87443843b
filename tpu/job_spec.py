"""Prints the Cloud TPU VM commands that run a pipeline experiment (a dry run).

    python -m tpu.job_spec --experiment=mnemosyne/vit_finetuning \
        --config_file=configs/experiments/vit_finetuning_b16.yaml \
        --tpu_name=my-tpu --zone=us-central2-b --accelerator_type=v4-8 \
        --model_dir=gs://my-bucket/vit_b16

prints, in order, the commands to create the TPU VM, pack this repository (its
sources: no virtualenv, git data, run outputs or Bazel trees) and copy it to
every worker, install it there, run the exact `python3 -m pipelines.train ...`
command, and delete the VM. Nothing is executed. Every value comes from flags:
nothing about a project, bucket or host is built in. The experiment, config
files and overrides are parsed and checked first, so a printed command does not
fail on its config.

Where the run starts. TensorFlow drives a TPU from one client: on a single-host
TPU (v4-8, v5litepod-8, ...) the run starts on the VM with `--tpu=local` (and
the PJRT plugin variables of a `-pjrt` runtime); on a pod slice (v4-16 and up)
it starts on worker 0 only, with `--tpu=<name>`, `TPU_NAME` and
`TPU_LOAD_LIBRARY=0`, and reaches the other hosts' TPU servers over the
network (as in Google's own TensorFlow TPU tests).

Preemption (a Spot VM is taken away): run every command but the last again,
with the same --model_dir; the run resumes from the latest checkpoint there.
"""

import dataclasses
import os
import re
import shlex
import sys
from typing import List, Optional, Sequence, Tuple

from absl import app
from absl import flags
import tensorflow as tf

from pipelines import train
from tpu import strategy as strategy_lib

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

flags.DEFINE_string("tpu_name", None, "Name of the TPU VM to create.")
flags.DEFINE_string("zone", None, "Cloud zone of the TPU VM, e.g. us-central2-b.")
flags.DEFINE_string("accelerator_type", None, "TPU type, e.g. v4-8, v3-32, v5litepod-16.")
flags.DEFINE_string("runtime_version", None, "TPU VM software version; default "
                    "tpu-vm-tf-<installed TF version>[-pod]-pjrt (list them with "
                    "`gcloud compute tpus tpu-vm versions list --zone=ZONE`).")
flags.DEFINE_string("project", None, "Cloud project; default: gcloud's configured project.")
flags.DEFINE_bool("spot", False, "Create a Spot (preemptible) TPU VM.")
flags.DEFINE_string("source_dir", REPO_ROOT, "The repository to copy to the workers.")
flags.DEFINE_string("remote_dir", "mnemosyne-tf", "Where the repository goes on each "
                    "worker (relative to the home directory).")
flags.DEFINE_string("install", "python3 -m pip install -e .", "Command that installs the "
                    "repository on each worker (run inside remote_dir).")

FLAGS = flags.FLAGS

_ACCELERATOR = re.compile(r"^v\d+[a-z]*-(\d+)$")
_TPU_NAME = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
# What the source archive leaves out (names of files or directories at any depth).
_NOT_SOURCES = (".venv", ".git", "runs", "bazel-*", "__pycache__", "*.egg-info",
                ".pytest_cache", "demo_output")
# The PJRT plugin of a single-host `-pjrt` TPU VM runtime.
_PJRT_ENV = (("NEXT_PLUGGABLE_DEVICE_USE_C_API", "true"),
             ("TF_PLUGGABLE_DEVICE_LIBRARY_PATH", "/lib/libtpu.so"))


@dataclasses.dataclass(frozen=True)
class TpuJob:
  """Everything the commands depend on."""
  experiment: str
  mode: str
  model_dir: str
  tpu_name: str
  zone: str
  accelerator_type: str
  config_files: Tuple[str, ...] = ()
  params_override: Optional[str] = None
  runtime_version: Optional[str] = None
  project: Optional[str] = None
  spot: bool = False
  source_dir: str = REPO_ROOT
  remote_dir: str = "mnemosyne-tf"
  install: str = "python3 -m pip install -e ."

  @property
  def multi_host(self) -> bool:
    """More than 8 chips/cores (v4-16, v3-32, v5litepod-16, ...) span several hosts."""
    return int(_ACCELERATOR.match(self.accelerator_type).group(1)) > 8

  @property
  def version(self) -> str:
    """The TPU VM runtime: given, or this TensorFlow's [pod] PJRT image."""
    if self.runtime_version:
      return self.runtime_version
    pod = "-pod" if self.multi_host else ""
    return f"tpu-vm-tf-{tf.__version__}{pod}-pjrt"

  @property
  def archive(self) -> str:
    """The source archive's file name (made here, copied to each worker's home)."""
    return os.path.basename(self.remote_dir.rstrip("/")) + ".tar.gz"


def check(job: TpuJob) -> None:
  """ValueError naming every problem; parses the experiment config as the run
  will, and checks that its strategy can run on the TPU."""
  problems = []
  for name in ("experiment", "mode", "model_dir", "tpu_name", "zone", "accelerator_type"):
    if not getattr(job, name):
      problems.append(f"--{name} is required")
  if job.tpu_name and not _TPU_NAME.match(job.tpu_name):
    problems.append(f"--tpu_name {job.tpu_name!r}: lower-case letters, digits and '-', "
                    "starting with a letter")
  if job.accelerator_type and not _ACCELERATOR.match(job.accelerator_type):
    problems.append(f"--accelerator_type {job.accelerator_type!r} is not like v4-8 or "
                    "v5litepod-16")
  if job.model_dir and not job.model_dir.startswith("gs://"):
    problems.append(f"--model_dir {job.model_dir!r} must be a gs:// path: every TPU worker "
                    "writes there and a preempted VM loses its disk")
  if job.mode and job.mode not in train.MODES:
    problems.append(f"--mode must be one of {train.MODES}, got {job.mode!r}")
  if not os.path.isdir(job.source_dir):
    problems.append(f"--source_dir {job.source_dir!r} is not a directory")
  for path in job.config_files:
    if os.path.isabs(path) or not os.path.isfile(os.path.join(job.source_dir, path)):
      problems.append(f"config file {path!r} must be a path inside --source_dir "
                      "(it is copied to the workers with the repository)")
  if problems:
    raise ValueError("\n  ".join(["invalid TPU job:"] + problems))
  tpu = train_command(job)[-1].split("=", 1)[1]
  params = train.parse_config(
      job.experiment, [os.path.join(job.source_dir, p) for p in job.config_files],
      job.params_override, tpu=tpu)
  strategy_lib.choose(params.runtime.distribution_strategy, tpu)


def train_command(job: TpuJob) -> List[str]:
  """The `python3 -m pipelines.train ...` command the run's client executes."""
  command = ["python3", "-m", "pipelines.train", f"--experiment={job.experiment}",
             f"--mode={job.mode}", f"--model_dir={job.model_dir}"]
  command += [f"--config_file={path}" for path in job.config_files]
  if job.params_override:
    command.append(f"--params_override={job.params_override}")
  # One host: the TPU is attached to this VM. A pod slice: resolve it by name.
  command.append(f"--tpu={job.tpu_name if job.multi_host else 'local'}")
  return command


def train_environment(job: TpuJob) -> List[Tuple[str, str]]:
  """Environment variables of the run's client (module docstring)."""
  if job.multi_host:
    return [("TPU_NAME", job.tpu_name), ("TPU_LOAD_LIBRARY", "0")]
  return list(_PJRT_ENV) if job.version.endswith("-pjrt") else []


def commands(job: TpuJob) -> List[Tuple[str, List[str]]]:
  """(title, argv) of every command, in the order to run them."""
  where = [f"--zone={job.zone}"] + ([f"--project={job.project}"] if job.project else [])
  tpu_vm = ["gcloud", "compute", "tpus", "tpu-vm"]
  remote = f"~/{job.remote_dir}"
  create = tpu_vm + ["create", job.tpu_name, *where,
                     f"--accelerator-type={job.accelerator_type}", f"--version={job.version}"]
  if job.spot:
    create.append("--spot")
  pack = ["tar", "-czf", job.archive, "-C", job.source_dir,
          *[f"--exclude={name}" for name in _NOT_SOURCES], "."]
  install = (f"mkdir -p {remote} && tar -xzf ~/{job.archive} -C {remote} && "
             f"cd {remote} && {job.install}")
  environment = "".join(f"{name}={shlex.quote(value)} "
                        for name, value in train_environment(job))
  run = f"cd {remote} && {environment}{shlex.join(train_command(job))}"
  client = "--worker=0" if job.multi_host else "--worker=all"
  return [
      ("Create the TPU VM", create),
      ("Pack this repository's sources (here)", pack),
      ("Copy them to every worker",
       tpu_vm + ["scp", job.archive, f"{job.tpu_name}:~/", *where, "--worker=all"]),
      ("Install them on every worker",
       tpu_vm + ["ssh", job.tpu_name, *where, "--worker=all", f"--command={install}"]),
      ("Run the experiment (again after a preemption: it resumes)",
       tpu_vm + ["ssh", job.tpu_name, *where, client, f"--command={run}"]),
      ("Delete the TPU VM", tpu_vm + ["delete", job.tpu_name, *where, "--quiet"]),
  ]


def render(job: TpuJob) -> str:
  """The commands as a shell script (comments and one command per step)."""
  lines = [f"# {job.experiment} on {job.accelerator_type} ({job.version}), "
           f"model_dir {job.model_dir}"]
  for number, (title, argv) in enumerate(commands(job), 1):
    lines += ["", f"# {number}. {title}", shlex.join(argv)]
  return "\n".join(lines) + "\n"


def job_from_flags(flag_values=FLAGS) -> TpuJob:
  """The job the command-line flags describe (--mode defaults to train_and_eval)."""
  return TpuJob(
      experiment=flag_values.experiment, mode=flag_values.mode or "train_and_eval",
      model_dir=flag_values.model_dir, tpu_name=flag_values.tpu_name, zone=flag_values.zone,
      accelerator_type=flag_values.accelerator_type,
      config_files=tuple(flag_values.config_file or ()),
      params_override=flag_values.params_override,
      runtime_version=flag_values.runtime_version, project=flag_values.project,
      spot=flag_values.spot, source_dir=flag_values.source_dir,
      remote_dir=flag_values.remote_dir, install=flag_values.install)


def main(argv: Sequence[str]):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  job = job_from_flags()
  try:
    if FLAGS.tpu:
      raise ValueError("--tpu is the run's flag; name the TPU VM with --tpu_name")
    check(job)
  except ValueError as e:
    sys.exit(f"tpu.job_spec: error: {e}")
  sys.stdout.write(render(job))


if __name__ == "__main__":
  app.run(main)
