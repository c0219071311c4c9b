"""Training: the loop and its state, the losses (cross-entropy, REINFORCE, self-critical), weight averaging, run folders."""
