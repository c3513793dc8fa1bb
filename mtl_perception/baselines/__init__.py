"""Classical baselines the learned models are compared against (torch-free)."""
