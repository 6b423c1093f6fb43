"""LoRA on the attention projections of a diffusers UNet, through PEFT, with the trainable matrices as a module.

PEFT replaces every targeted ``nn.Linear`` (``to_q``, ``to_k``, ``to_v``, ``to_out.0`` of each attention layer,
self- and cross-attention) by a LoRA layer computing ``W x + (alpha / r) * B A x``; ``A`` starts Gaussian
(std 1/r), ``B`` at zero, so a fresh adapter leaves the UNet's output exactly unchanged. The UNet itself stays out of
the guidance's module tree; :class:`LoraWeights` registers only the ``A``/``B`` layers (the same objects the UNet
uses), so they alone reach ``state_dict`` and the optimizer.

Files are diffusers' LoRA format: ``pytorch_lora_weights.safetensors`` with keys ``unet.<module>.lora_A.weight`` and
the adapter config (rank, alpha, targets) as ``lora_adapter_metadata``; without that metadata a loader cannot know
alpha and silently assumes alpha = rank. ``pipe.load_lora_weights(folder)`` and ``unet.load_lora_adapter(folder,
prefix="unet")`` read it. Only safetensors is read (:func:`read_safetensors`): a pickled ``pytorch_lora_weights.bin``
or any other file is refused in one line, so a LoRA from elsewhere cannot run code.
"""

from __future__ import annotations

import json
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Dict, Iterator, List, Sequence, Tuple

import torch
import torch.nn as nn
from torch import Tensor

from framework.errors import CheckpointError, ConfigError

ADAPTER_NAME = "default"
LORA_FILE = "pytorch_lora_weights.safetensors"
PICKLED_LORA_FILE = "pytorch_lora_weights.bin"  # older diffusers' pickle format: refused
METADATA_KEY = "lora_adapter_metadata"
PREFIX = "unet"


def inject_lora(
    unet: nn.Module, rank: int, alpha: float, target_modules: Sequence[str], adapter_name: str = ADAPTER_NAME
) -> None:
    """Add a LoRA adapter to ``unet`` (frozen), its matrices trainable and in fp32 whatever the UNet's dtype."""
    from peft import LoraConfig

    if rank < 1:
        raise ConfigError(f"lora_rank: must be at least 1, got {rank}")
    unet.requires_grad_(False)
    config = LoraConfig(r=rank, lora_alpha=alpha, init_lora_weights="gaussian", target_modules=list(target_modules))
    try:
        unet.add_adapter(config, adapter_name=adapter_name)
    except ValueError as e:
        raise ConfigError(
            f"lora_target_modules: {list(target_modules)} match no layer of the UNet ({e}); "
            "use names such as to_q, to_k, to_v, to_out.0"
        ) from None
    for layer in tuner_layers(unet).values():
        for sub in (layer.lora_A[adapter_name], layer.lora_B[adapter_name]):
            sub.to(torch.float32)
            sub.requires_grad_(True)


def tuner_layers(unet: nn.Module) -> Dict[str, nn.Module]:
    """The PEFT LoRA layers of ``unet`` by module name (``down_blocks.0.attentions.0...attn1.to_q``)."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    return {name: m for name, m in unet.named_modules() if isinstance(m, BaseTunerLayer)}


class LoraWeights(nn.Module):
    """The trainable ``A``/``B`` matrices of a UNet's LoRA adapter, registered as this module's children.

    Keys of ``state_dict``: ``layers.<module name with '.' as '-'>.lora_A.weight`` (and ``lora_B``).
    """

    def __init__(self, unet: nn.Module, adapter_name: str = ADAPTER_NAME):
        super().__init__()
        self.adapter_name = adapter_name
        self.layers = nn.ModuleDict()
        self._tuners: Dict[str, nn.Module] = tuner_layers(unet)  # plain dict: the UNet is not a child
        for name, layer in self._tuners.items():
            self.layers[name.replace(".", "-")] = nn.ModuleDict(
                {"lora_A": layer.lora_A[adapter_name], "lora_B": layer.lora_B[adapter_name]}
            )
        self._base_scaling = {name: layer.scaling[adapter_name] for name, layer in self._tuners.items()}
        self.peft_config = unet.peft_config[adapter_name]

    @contextmanager
    def scaled(self, scale: float) -> Iterator[None]:
        """Run the UNet with the LoRA update multiplied by ``scale`` (0: exactly the base model; 1: full strength).

        The original scaling ``alpha / r`` is restored exactly afterwards (no multiply-divide round trip).
        """
        if scale == 1.0:
            yield
            return
        for name, layer in self._tuners.items():
            layer.scaling[self.adapter_name] = self._base_scaling[name] * scale
        try:
            yield
        finally:
            for name, layer in self._tuners.items():
                layer.scaling[self.adapter_name] = self._base_scaling[name]

    @contextmanager
    def disabled(self) -> Iterator[None]:
        """Run the UNet as its base model, skipping the LoRA computation (PEFT's adapter switch).

        PEFT marks disabled adapters as not requiring grad; re-enabling marks them trainable again.
        """
        for layer in self._tuners.values():
            layer.enable_adapters(False)
        try:
            yield
        finally:
            for layer in self._tuners.values():
                layer.enable_adapters(True)

    def peft_state_dict(self) -> Dict[str, Tensor]:
        """LoRA weights keyed as PEFT/diffusers name them inside the UNet: ``<module>.lora_A.weight``."""
        out: Dict[str, Tensor] = {}
        for key, pair in self.layers.items():
            name = key.replace("-", ".")
            for part in ("lora_A", "lora_B"):
                out[f"{name}.{part}.weight"] = pair[part].weight.detach()
        return out

    def metadata(self) -> Dict:
        """The adapter config as JSON-able metadata (rank, alpha, target modules, ...)."""
        meta = self.peft_config.to_dict()
        return {k: sorted(v) if isinstance(v, set) else v for k, v in meta.items()}

    def save(self, directory: str | os.PathLike) -> Path:
        """Write ``pytorch_lora_weights.safetensors`` (diffusers format, with adapter metadata) into ``directory``."""
        from diffusers.loaders import StableDiffusionLoraLoaderMixin

        state = {k: v.to(torch.float32).contiguous().cpu() for k, v in self.peft_state_dict().items()}
        StableDiffusionLoraLoaderMixin.save_lora_weights(
            str(directory),
            unet_lora_layers=state,
            unet_lora_adapter_metadata=self.metadata(),
            safe_serialization=True,
        )
        return Path(directory) / LORA_FILE

    @torch.no_grad()
    def load(self, directory: str | os.PathLike) -> None:
        """Load weights written by :meth:`save` (or any diffusers SD LoRA of the same rank, alpha and targets)."""
        path = Path(directory) / LORA_FILE if Path(directory).is_dir() else Path(directory)
        if not path.is_file():
            pickled = Path(directory) / PICKLED_LORA_FILE
            if pickled.is_file():
                raise CheckpointError(
                    f"LoRA weights '{pickled}' are a pickle and only {LORA_FILE} is read (a pickle can run code); "
                    "convert them once where you trust the file (diffusers' save_lora_weights writes safetensors)"
                )
            raise CheckpointError(f"LoRA weights '{path}' not found; give a folder written by save_lora")
        tensors, metadata = read_safetensors(path, "LoRA weights")
        try:
            meta = json.loads(metadata.get(METADATA_KEY, "{}"))
        except ValueError:
            meta = None
        if not isinstance(meta, dict):
            raise CheckpointError(f"LoRA weights '{path}': the {METADATA_KEY} metadata is not a JSON object")
        state = {k[len(PREFIX) + 1 :]: v for k, v in tensors.items() if k.startswith(PREFIX + ".")}
        _check_metadata(path, meta, self.peft_config)
        own = self.peft_state_dict()
        missing = sorted(set(own) - set(state))
        unexpected = sorted(set(state) - set(own))
        if missing or unexpected:
            what = f"missing {missing[0]}" if missing else f"unexpected {unexpected[0]}"
            raise CheckpointError(
                f"LoRA weights '{path}' do not fit this UNet ({what}); was it made for another model?"
            )
        for key, pair in self.layers.items():
            name = key.replace("-", ".")
            for part in ("lora_A", "lora_B"):
                w = pair[part].weight
                src = state[f"{name}.{part}.weight"]
                if src.shape != w.shape:
                    raise CheckpointError(f"LoRA weights '{path}': {name}.{part} has shape {tuple(src.shape)}, "
                                          f"this UNet needs {tuple(w.shape)}")
                w.copy_(src.to(w.dtype))


def read_safetensors(path: str | os.PathLike, what: str) -> Tuple[Dict[str, Tensor], Dict[str, str]]:
    """The tensors and metadata of a safetensors file; any other file (a pickle, a truncated file) is a one-line
    CheckpointError. Nothing in the file is executed: safetensors holds only a JSON header and raw tensor bytes."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            return {k: f.get_tensor(k) for k in f.keys()}, dict(f.metadata() or {})
    except (SafetensorError, OSError) as e:
        problem = getattr(e, "strerror", None) or (str(e).strip().splitlines() or [type(e).__name__])[0]
    try:
        with open(path, "rb") as raw:
            head = raw.read(4)
    except OSError:
        head = b""
    kind = "a PyTorch/pickle file" if head.startswith((b"\x80", b"PK\x03\x04")) else "not a safetensors file"
    raise CheckpointError(
        f"{what} '{path}' is {kind} ({problem[:120]}); only safetensors files are read, so that a file from "
        "elsewhere cannot run code"
    )


def _check_metadata(path: Path, meta: Dict, config) -> None:
    """Rank, alpha and targets of a file must match the adapter (unet.r / unet.lora_alpha / unet.target_modules)."""
    if not meta:
        raise CheckpointError(
            f"LoRA weights '{path}' carry no adapter metadata, so their lora_alpha is unknown; save them with "
            "save_lora (or diffusers' save_lora_weights with unet_lora_adapter_metadata)"
        )
    wants: List = [("r", config.r, "lora_rank"), ("lora_alpha", config.lora_alpha, "lora_alpha")]
    for field, value, key in wants:
        got = meta.get(f"{PREFIX}.{field}")
        if got is not None and (isinstance(got, bool) or not isinstance(got, (int, float))):
            raise CheckpointError(
                f"LoRA weights '{path}': the adapter metadata {PREFIX}.{field} is {str(got)[:40]!r}, not a number; "
                "the file is damaged or was not written by save_lora"
            )
        if got is not None and float(got) != float(value):
            raise ConfigError(
                f"{key}: is {value} but the LoRA weights '{path}' were trained with {got}; set {key}: {got}"
            )
    got_targets = meta.get(f"{PREFIX}.target_modules")
    if got_targets is not None and not (
        isinstance(got_targets, list) and all(isinstance(t, str) for t in got_targets)
    ):
        raise CheckpointError(
            f"LoRA weights '{path}': the adapter metadata {PREFIX}.target_modules is {str(got_targets)[:40]!r}, not a "
            "list of module names; the file is damaged or was not written by save_lora"
        )
    if got_targets is not None and set(got_targets) != set(config.target_modules):
        raise ConfigError(
            f"lora_target_modules: is {sorted(config.target_modules)} but the LoRA weights '{path}' target "
            f"{sorted(got_targets)}; set lora_target_modules to match"
        )
