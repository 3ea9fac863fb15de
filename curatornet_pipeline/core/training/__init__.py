"""Training (section 3.3): the loop with checkpoints and early stopping, and the training stage of one model variant."""
