"""What tests, scripts and benchmarks use and a training run never imports: builders of the offline test models
(tiny Stable Diffusion, SD 2.1-shaped, the toy prior's architecture), the toy prior's scenes, data and judges, and the
reference scenes that check the renderers. ``framework/`` never imports ``lab/``."""
