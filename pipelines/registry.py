"""Registers every pipeline experiment: importing a module registers its
experiment config (official's exp_factory) and task (official's task_factory)."""

# pylint: disable=unused-import
from pipelines import bert_pretraining  # mnemosyne/bert_pretraining
from pipelines import t5_prompt_tuning  # mnemosyne/t5_prompt_tuning
from pipelines import vit_finetuning  # mnemosyne/vit_finetuning
