"""Score-distillation framework: registry, configs, data, geometry, rendering, prompt processing, guidance."""

__version__ = "0.1.0"
