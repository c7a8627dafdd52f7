"""GPU benchmark: bundle (here) and bench (on the GPU machine)."""
