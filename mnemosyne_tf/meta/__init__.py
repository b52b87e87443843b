"""Meta-training: optimizee tasks, truncated unrolls, the training binary."""
