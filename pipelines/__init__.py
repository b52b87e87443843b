"""Mnemosyne-TF training pipelines on tf-models-official (BERT, T5 prompts, ViT)."""
