"""Running pipelines on tf.distribute strategies and Cloud TPU.

strategy:   which strategy a run uses (`--tpu`, TF_CONFIG, GPUs) and building it.
preemption: resuming exactly where a killed or preempted run left off.
job_spec:   the Cloud TPU VM commands (create / run / delete) for an experiment.
"""
