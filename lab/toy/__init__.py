"""The toy prior: procedurally rendered coloured primitives, the small latent diffusion model trained on them, and
the scoring of a finished toy text-to-3D run against the ground-truth primitive."""
