"""Loading an experiment config: YAML + command-line overrides -> a validated ``ExperimentConfig``.

Everything a run needs is resolved and type-checked here, before any model is built or any folder is created:
the YAML file (found as given or under ``configs/``), the overrides, the interpolations and resolvers, the
``data_type``/``system_type`` modules and every nested ``*_type`` below them, and the ``trainer`` and ``checkpoint``
keys (checked against Lightning's ``Trainer`` and ``ModelCheckpoint``).
"""

from __future__ import annotations

import errno
import importlib.util
import inspect
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Dict, List, Optional, Sequence, Tuple

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from framework.config import Bounds, parse_structured
from framework.errors import ConfigError
from framework.resolvers import register_resolvers

REPO_ROOT = Path(__file__).resolve().parent.parent
MAX_SEED = 2**32 - 1
"""The largest seed numpy and Lightning accept (threestudio seeds through Lightning: 0 to 2^32 - 1)."""
CONFIG_DIR = REPO_ROOT / "configs"
CUSTOM_DIR = REPO_ROOT / "custom"


@dataclass
class ExperimentConfig:
    """The top level of an experiment YAML (threestudio's shape)."""

    name: str = "default"
    """Experiment name: the folder under ``exp_root_dir`` that groups trials."""
    description: str = ""
    """Free text kept with the config."""
    tag: str = ""
    """Trial name (threestudio configs derive it from the prompt); made safe for a folder name."""
    seed: Annotated[int, Bounds(ge=0, le=MAX_SEED - 1024, hint=f"set an integer from 0 to {MAX_SEED - 1024}")] = 0
    """Random seed, 0 to 2^32 - 1025 (Lightning's and numpy's range, less room for the ranks); rank r of a
    multi-process run uses ``seed + r``."""
    use_timestamp: bool = True
    """Append ``@YYYYMMDD-HHMMSS`` to the trial folder so that runs never overwrite each other."""
    timestamp: str = ""
    """Set by the launcher; leave empty."""
    exp_root_dir: str = "outputs"
    """Root folder of all experiments."""
    resume: Optional[str] = None
    """A checkpoint to continue training from (or to validate/test/export with)."""
    data_type: str = ""
    """Registered data module name, e.g. ``random-camera-datamodule``."""
    data: Any = field(default_factory=dict)
    """Config of the data module (its ``Config`` dataclass)."""
    system_type: str = ""
    """Registered system name, e.g. ``prolificdreamer-system``."""
    system: Any = field(default_factory=dict)
    """Config of the system (its ``Config`` dataclass)."""
    trainer: Dict[str, Any] = field(default_factory=dict)
    """Keyword arguments of ``pytorch_lightning.Trainer`` (``max_steps``, ``val_check_interval``, ...)."""
    checkpoint: Dict[str, Any] = field(default_factory=dict)
    """Keyword arguments of ``pytorch_lightning.callbacks.ModelCheckpoint`` (``every_n_train_steps``, ...)."""


# OmegaConf built-in resolvers a config must not reach: ``oc.coerce`` imports any module its argument names
# (``${oc.coerce:some.module.x,1}``), which runs that module's import-time code.
# Trainer arguments the launcher owns; setting them in the config would conflict.
LAUNCHER_TRAINER_KEYS = {"accelerator", "devices", "strategy", "logger", "callbacks", "default_root_dir", "plugins"}
LAUNCHER_CHECKPOINT_KEYS = {"dirpath"}


def find_config(path: str) -> Path:
    """``path`` as given, else under ``configs/``; a clear error listing the available configs otherwise."""
    from framework.utils.paths import path_status, special_file

    p = Path(path)
    for where in (p, CONFIG_DIR / path):
        st = path_status(where, "--config")
        if st is not None and special_file(st) is not None:
            raise ConfigError(f"config file '{where}' is {special_file(st)}, not a file; give a YAML file")
        if st is not None and where.is_file():
            return where
    candidate = CONFIG_DIR / path
    available = sorted(str(q.relative_to(CONFIG_DIR)) for q in CONFIG_DIR.rglob("*.yaml"))
    raise ConfigError(
        f"config file '{path}' not found (looked at {p} and {candidate}); "
        f"available under configs/: {', '.join(available) or '(none)'}"
    )


def import_custom_modules(custom_dir: Path = CUSTOM_DIR) -> List[str]:
    """Import every module of ``custom/`` so that it can register new types before a config is parsed."""
    imported = []
    if not custom_dir.is_dir():
        return imported
    for entry in sorted(custom_dir.iterdir()):
        if entry.name.startswith((".", "_")):
            continue
        if entry.is_file() and entry.suffix == ".py":
            target = entry
        elif entry.is_dir() and (entry / "__init__.py").is_file():
            target = entry / "__init__.py"
        else:
            continue
        name = f"custom.{entry.stem}"
        if name in sys.modules:
            imported.append(name)
            continue
        spec = importlib.util.spec_from_file_location(
            name, target, submodule_search_locations=[str(entry)] if entry.is_dir() else None
        )
        module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
        sys.modules[name] = module
        try:
            spec.loader.exec_module(module)  # type: ignore[union-attr]
        except Exception as e:
            del sys.modules[name]
            raise ConfigError(f"error importing extension {target}: {type(e).__name__}: {e}") from e
        imported.append(name)
    return imported


def _check_kwargs(target: Any, values: Dict[str, Any], prefix: str, reserved: set, source: str) -> None:
    params = inspect.signature(target).parameters
    for key in values:
        if key in reserved:
            raise ConfigError(
                f"config error: {prefix}.{key}: set by the launcher (use --gpu for devices); remove it (in {source})"
            )
        if key not in params:
            import difflib

            match = difflib.get_close_matches(key, list(params), n=1)
            hint = f" (did you mean '{match[0]}'?)" if match else ""
            raise ConfigError(
                f"config error: {prefix}.{key}: not an argument of {target.__qualname__}{hint}; "
                f"remove it or fix the spelling (in {source})"
            )


def _parse_overrides(overrides: Sequence[str]) -> Any:
    """The ``key=value`` overrides as one OmegaConf config; a value YAML cannot read is a one-line ConfigError."""
    import yaml

    items = [o.lstrip("+") for o in overrides]
    try:
        return OmegaConf.from_dotlist(items)
    except yaml.YAMLError:
        for item in items:  # name the override that fails
            try:
                OmegaConf.from_dotlist([item])
            except yaml.YAMLError as e:
                key, value = item.split("=", 1)
                if isinstance(e, yaml.reader.ReaderError):
                    problem, fix = e.reason, "remove the control characters from it"
                else:
                    problem = getattr(e, "problem", None) or type(e).__name__
                    fix = f"""quote it as a YAML string, e.g. {key}='"..."' """.rstrip()
                raise ConfigError(
                    f"config error: {key}: the command-line value {value!r} is not valid YAML ({problem}); {fix}"
                ) from None
        raise


MAX_RESOLVED_CHARACTERS = 1_000_000
"""The largest a config value may grow by interpolation (``b: ${a}${a}``, ``c: ${b}${b}``, ... doubles each time)."""

_REFERENCE = re.compile(r"\$\{([A-Za-z_][\w.\-\[\]]*)\}")


def check_interpolation_sizes(cfg: Any, config_path: Path) -> None:
    """Refuse, before OmegaConf resolves anything, a value whose interpolations would expand beyond
    ``MAX_RESOLVED_CHARACTERS`` (a chain of ``${a}${a}`` exhausts memory in seconds).

    The size of a value is bounded from its text: its own characters plus the sizes of the nodes it references
    (``${x.y}``, also inside a resolver's arguments; a referenced mapping or list counts all its values). Resolvers
    return at most about the size of their arguments (``rmspace``, ``basename``; the arithmetic ones are bounded in
    magnitude), so the bound holds for them too.
    """
    container = OmegaConf.to_container(cfg, resolve=False)
    sizes: Dict[str, int] = {}
    busy: set = set()

    def node(key: str) -> Any:
        value: Any = container
        for part in re.split(r"\.|\[|\]", key):
            if part == "":
                continue
            if isinstance(value, dict) and part in value:
                value = value[part]
            elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
                value = value[int(part)]
            else:
                return None
        return value

    def size(key: str, value: Any) -> int:
        if key in sizes:
            return sizes[key]
        if key in busy:  # a cycle: OmegaConf reports it itself
            return 0
        busy.add(key)
        if isinstance(value, dict):
            total = sum(size(f"{key}.{k}" if key else str(k), v) for k, v in value.items())
        elif isinstance(value, list):
            total = sum(size(f"{key}[{i}]", v) for i, v in enumerate(value))
        elif isinstance(value, str):
            total = len(value) + sum(size(ref, node(ref)) for ref in _REFERENCE.findall(value))
        else:
            total = len(str(value))
        busy.discard(key)
        sizes[key] = total
        if total > MAX_RESOLVED_CHARACTERS and isinstance(value, str):
            raise ConfigError(
                f"config error: {key}: its interpolations would expand to about {total:.3g} characters (more than "
                f"{MAX_RESOLVED_CHARACTERS}); break the chain of references (in {config_path})"
            )
        return total

    size("", container)


def load_experiment(path: str, overrides: Sequence[str] = ()) -> tuple:
    """Load, override, resolve and validate. Returns ``(ExperimentConfig, raw OmegaConf config, config path)``."""
    register_resolvers()
    config_path = find_config(path)
    try:
        raw = OmegaConf.load(config_path)
    except Exception as e:
        problem = getattr(e, "problem", None) or (str(e).strip().splitlines() or [type(e).__name__])[0]
        mark = getattr(e, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        raise ConfigError(f"config file {config_path} is not valid YAML{at}: {problem}") from None
    if not isinstance(raw, type(OmegaConf.create({}))):
        raise ConfigError(f"config file {config_path} must hold a mapping at the top level")

    override_keys = []
    for item in overrides:
        if "=" not in item or item.startswith("="):
            raise ConfigError(
                f"argument '{item}' is neither a flag nor a key=value override "
                "(e.g. system.prompt_processor.prompt=\"a hamburger\")"
            )
        override_keys.append(item.split("=", 1)[0].lstrip("+"))
    dotlist = _parse_overrides(overrides)
    try:
        cfg = OmegaConf.merge(raw, dotlist)
        check_interpolation_sizes(cfg, config_path)
        container = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
    except OmegaConfBaseException as e:
        key = getattr(e, "full_key", None) or ""
        msg = str(e).strip().splitlines()[0]
        missing = re.search(r"Missing mandatory value: ([\w.\[\]]+)", msg)
        if missing and type(e).__name__ != "MissingMandatoryValue":
            key = missing.group(1)  # reached through an interpolation (e.g. the tag made from the prompt)
        if missing or type(e).__name__ == "MissingMandatoryValue":
            raise ConfigError(
                f"config error: {key}: missing required value (??? in {config_path}); "
                f"set it on the command line, e.g. {key}=..."
            ) from None
        raise ConfigError(f"config error: {key or '(interpolation)'}: {msg} (in {config_path})") from None

    def source(key: str) -> str:
        for k in override_keys:
            if key == k or key.startswith(k + ".") or k.startswith(key + "."):
                return f"the command-line override '{k}=...'"
        return str(config_path)

    exp = parse_structured(ExperimentConfig, container, "", source)
    if not exp.system_type:
        raise ConfigError(f"config error: system_type: missing; name a registered system (in {config_path})")
    if not exp.data_type:
        raise ConfigError(f"config error: data_type: missing; name a registered data module (in {config_path})")

    import pytorch_lightning as pl
    from pytorch_lightning.callbacks import ModelCheckpoint

    _check_kwargs(pl.Trainer.__init__, exp.trainer, "trainer", LAUNCHER_TRAINER_KEYS, str(config_path))
    _check_kwargs(ModelCheckpoint.__init__, exp.checkpoint, "checkpoint", LAUNCHER_CHECKPOINT_KEYS, str(config_path))
    return exp, cfg, config_path


def trial_dir(exp: ExperimentConfig) -> Path:
    """``<exp_root_dir>/<name>/<tag>[@<timestamp>]``, each part one path component made by ``safe_name``.

    Whatever the tag (a prompt with ``/``, ``..``, a leading ``-``, control characters, any length), the trial folder
    is a direct grandchild of ``exp_root_dir``.
    """
    from framework.utils.naming import safe_name

    trial = safe_name(exp.tag or "default")
    if exp.use_timestamp and exp.timestamp:
        trial = f"{trial}@{safe_name(exp.timestamp)}"
    return Path(exp.exp_root_dir) / safe_name(exp.name or "default") / trial



MAX_SAME_NAME_TRIALS = 1000
"""How many runs may share one timestamp (or resume the same step) before a trial folder is refused."""


def reserve_trial_dir(exp: ExperimentConfig, resume_step: Optional[int] = None) -> Tuple[Path, List[Path]]:
    """Create the run's trial folder, empty and unique, and return it with the folders created for it.

    The name is ``trial_dir(exp)``. Timestamped runs that start in the same second get ``-2``, ``-3``, ...; each
    name is claimed with an atomic ``mkdir``, so two processes never share a folder. With ``use_timestamp: false`` an
    existing folder is refused, as always, except for a run given ``resume=`` (the command printed by an interrupted
    run), which then gets ``<tag>@resume-step<N>`` (``-2``, ... if that exists too) beside the folder it continues,
    which is never overwritten. The caller removes the created folders again (:func:`release_trial_dir`) if the run
    stops before writing into them.
    """
    from framework.errors import UserError

    base = trial_dir(exp)
    candidates = [base]
    if exp.use_timestamp:
        candidates += [base.with_name(f"{base.name}-{i}") for i in range(2, MAX_SAME_NAME_TRIALS)]
    elif resume_step is not None:
        resumed = f"{base.name}@resume-step{int(resume_step)}"
        candidates += [base.with_name(resumed)]
        candidates += [base.with_name(f"{resumed}-{i}") for i in range(2, MAX_SAME_NAME_TRIALS)]
    parent = base.parent
    created = _missing_ancestors(parent)
    try:
        parent.mkdir(parents=True, exist_ok=True)
        for candidate in candidates:
            try:
                candidate.mkdir()
            except FileExistsError:
                continue
            return candidate, [candidate, *created]
    except OSError as e:
        release_trial_dir(created)
        if isinstance(e, FileExistsError) or e.errno in (errno.ENOTDIR,):
            blocking = next((p for p in [parent, *parent.parents] if p.exists()), parent)
            raise UserError(
                f"cannot create the trial folder {base}: {blocking} is a file, not a folder; "
                "set exp_root_dir=<a writable folder>"
            ) from None
        raise UserError(
            f"cannot write the trial folder {base}: {e.strerror or e}; set exp_root_dir=<a writable folder>"
        ) from None
    release_trial_dir(created)
    raise UserError(
        f"trial folder {base} exists already and is never overwritten; set use_timestamp=true or another tag"
    )


def _missing_ancestors(folder: Path) -> List[Path]:
    """``folder`` and its ancestors that do not exist yet, deepest first."""
    from framework.utils.paths import path_status

    missing = []
    folder = Path(folder).absolute()
    while path_status(folder, "the trial folder") is None and folder != folder.parent:
        missing.append(folder)
        folder = folder.parent
    return missing


def release_trial_dir(created: Sequence[Path]) -> None:
    """Remove the folders ``reserve_trial_dir`` created, deepest first, if they are still empty."""
    for folder in created:
        try:
            folder.rmdir()
        except OSError:
            break
