"""Loading Stable Diffusion components with diffusers/transformers ``from_pretrained``, with one-line errors.

A model is named by a Hub id (``stabilityai/stable-diffusion-2-1-base``) or a local folder in diffusers format
(``model_index.json``, ``unet/``, ``vae/``, ``text_encoder/``, ``tokenizer/``, ``scheduler/``). Offline
(``HF_HUB_OFFLINE=1``) a Hub id loads only from the local Hugging Face cache; anything missing is a
:class:`ModelNotFoundError` naming the config key, the value and how to point the key at a local copy.

Nothing loaded runs code: the classes are fixed (no auto classes, no ``trust_remote_code``, no custom pipelines);
weights (UNet, VAE, text encoder) are read from ``.safetensors`` files only (``use_safetensors=True``), the tokenizer
and scheduler from JSON/text files. A name that is neither an existing folder nor a valid Hub id (``name`` or
``namespace/name``) is refused before anything is fetched: a URL is not a model id.
"""

from __future__ import annotations

import os
import pickle
import re
from pathlib import Path
from typing import Any, Iterable, List

import torch
import torch.nn as nn

from framework.errors import CheckpointError, ConfigError, ModelNotFoundError

_TRUE = {"1", "ON", "YES", "TRUE"}
_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]+:")  # a scheme: https:, hf:, file:, s3: (not a drive letter, C:)
_PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")


def hub_offline() -> bool:
    """Whether the Hugging Face Hub is switched off by the environment (``HF_HUB_OFFLINE``)."""
    return os.environ.get("HF_HUB_OFFLINE", "0").upper() in _TRUE


def is_hub_id(name: str) -> bool:
    """Whether ``name`` is a valid Hugging Face Hub model id (``name`` or ``namespace/name``, the Hub's own rules)."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(name)
    except HFValidationError:
        return False
    return bool(name)


def check_model_name(name: str, key: str) -> None:
    """Refuse, in one line, a model name that is neither an existing folder nor a Hub id (a URL, a missing path)."""
    if os.path.isdir(name):
        return
    if _URL.match(name):
        raise ConfigError(
            f"{key}: '{name}' is a URL; give a Hub model id (e.g. stabilityai/stable-diffusion-2-1-base) or a local "
            "diffusers folder (URLs are never fetched)"
        )
    if not is_hub_id(name):
        raise ModelNotFoundError(f"{key}: directory '{name}' does not exist; set {key} to a diffusers model folder")


def _not_found(key: str, name: str, subfolder: str) -> ModelNotFoundError:
    if os.path.isdir(name):
        return ModelNotFoundError(
            f"{key}: '{name}' has no usable '{subfolder}/' folder; point {key} at a Stable Diffusion checkpoint "
            "in diffusers format (model_index.json, unet/, vae/, text_encoder/, tokenizer/, scheduler/)"
        )
    where = "the Hub is off (HF_HUB_OFFLINE=1)" if hub_offline() else "it could not be downloaded"
    return ModelNotFoundError(
        f"{key}: model '{name}' is not in the local Hugging Face cache and {where}; download it where there is "
        f"network ('hf download {name} --local-dir DIR') and set {key}=DIR"
    )


def _check_local_weights(folder: Path, key: str) -> None:
    """A local component folder whose weights exist only as pickles is refused in one line (a pickle can run code)."""
    files = [f for f in folder.iterdir() if f.is_file()]
    if any(f.name.endswith(".safetensors") for f in files):
        return
    pickled = sorted(f.name for f in files if f.name.endswith(_PICKLE_SUFFIXES))
    if pickled:
        raise CheckpointError(
            f"{key}: '{folder}' holds its weights only as a pickle ({pickled[0]}) and only .safetensors weights are "
            "read (a pickle can run code); convert them once where you trust the file (save_pretrained writes "
            "safetensors)"
        )


def load_component(cls: Any, name: str, subfolder: str, key: str, **kwargs: Any) -> Any:
    """``cls.from_pretrained(name, subfolder=subfolder, **kwargs)``; weights (``nn.Module`` classes) from safetensors.

    A missing model raises ModelNotFoundError, a URL ConfigError, weights that cannot be read safely CheckpointError;
    each names ``key`` in one line.
    """
    from safetensors import SafetensorError

    check_model_name(name, key)
    local = Path(name, subfolder)
    if os.path.isdir(name) and not local.is_dir():
        raise _not_found(key, name, subfolder)
    weights = isinstance(cls, type) and issubclass(cls, nn.Module)
    if weights:
        kwargs["use_safetensors"] = True
        if local.is_dir():
            _check_local_weights(local, key)
    try:
        return cls.from_pretrained(name, subfolder=subfolder, **kwargs)
    except (OSError, SafetensorError, pickle.UnpicklingError) as e:
        if not local.is_dir() and isinstance(e, OSError):
            raise _not_found(key, name, subfolder) from e
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise CheckpointError(f"{key}: the weights in '{local}' cannot be read: {first[:200]}") from None


def frozen_weights_dtype(half_precision_weights: bool, device: torch.device) -> torch.dtype:
    """fp16 for frozen weights on CUDA when ``half_precision_weights``; fp32 elsewhere (CPU kernels want fp32)."""
    return torch.float16 if half_precision_weights and device.type == "cuda" else torch.float32


def load_dtype(half_precision_weights: bool) -> torch.dtype:
    """The dtype to load frozen weights in: the one they will have on the device the run will most likely use."""
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return frozen_weights_dtype(half_precision_weights, device)


def freeze(model: nn.Module) -> nn.Module:
    """No gradients and eval mode (no dropout) for a frozen diffusion component."""
    model.requires_grad_(False)
    model.eval()
    return model


def place_frozen(
    models: Iterable[nn.Module], device: torch.device, dtype: torch.dtype, keep: Iterable[nn.Parameter] = ()
) -> None:
    """Move ``models`` to ``device`` and cast their floating weights to ``dtype``, in place.

    Parameters in ``keep`` (trainable LoRA weights living inside a frozen UNet) keep their own dtype (fp32): casting
    them down and back would lose precision. Parameter objects are kept (``.data`` is replaced), so an optimizer that
    holds them stays valid.
    """
    keep_ids = {id(p) for p in keep}
    for model in models:
        model.to(device)
        for p in model.parameters():
            if id(p) not in keep_ids and p.is_floating_point() and p.dtype != dtype:
                p.data = p.data.to(dtype)
        for mod in model.modules():
            for name, b in list(mod._buffers.items()):
                if b is not None and b.is_floating_point() and b.dtype != dtype:
                    mod._buffers[name] = b.to(dtype)


def unique(models: Iterable[nn.Module]) -> List[nn.Module]:
    """``models`` without repeats (one shared UNet counted once), in order."""
    out: List[nn.Module] = []
    for m in models:
        if m is not None and all(m is not o for o in out):
            out.append(m)
    return out
