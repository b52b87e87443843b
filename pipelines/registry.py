"""Registers every pipeline experiment: importing a module registers its
experiment config (official's exp_factory) and task (official's task_factory)."""

# pylint: disable=unused-import
from pipelines import vit_finetuning  # mnemosyne/vit_finetuning
