"""Model builders: the tiny random-weight Stable Diffusion checkpoint used by tests, benchmarks and smoke runs."""
