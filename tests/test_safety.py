"""Loading and writing files safely (docs/security.md), each point through the path a user reaches.

* A file from elsewhere never runs code. ``RunsCode`` pickles to a call of ``os.mkdir(marker)``; the payload files
  made from it do create the marker when loaded the unsafe way (``test_the_payload_runs_code_when_unpickled``), and
  are refused in one line, marker absent, through ``resume=`` (--train, --test, --export), ``system.weights=``, a
  LoRA folder, the text-embedding cache and a model folder.
* The source never evaluates code, asks for remote code or unpickles without ``weights_only=True`` (a token scan,
  itself checked on a snippet holding each pattern).
* Config resolvers: the registered set is the documented one; ``oc.coerce`` (it imports modules) is refused.
* Names: prompts that try to leave the output folder land in one safe folder under ``exp_root_dir``; cache files are
  hashes, different for different (model, prompt) pairs; a trial folder is never overwritten.
"""

import ast
import io
import json
import os
import pickle
import re
import shutil
import sys
import tokenize
from pathlib import Path

import pytest
import torch
from diffusers import AutoencoderKL, UNet2DConditionModel
from omegaconf.basecontainer import BaseContainer
from safetensors import safe_open
from transformers import CLIPTextModel

import framework.guidance  # noqa: F401  (registration)
import framework.prompt_processors  # noqa: F401  (registration)
import launch
from framework import registry
from framework.errors import CheckpointError, ConfigError, ModelNotFoundError
from framework.experiment import ExperimentConfig, load_experiment, trial_dir
from framework.resolvers import register_resolvers
from framework.guidance.lora import LORA_FILE, PICKLED_LORA_FILE
from framework.resolvers import RESOLVERS
from framework.utils.naming import safe_name
from tests.conftest import REPO_ROOT

SDS = registry.find("guidance", "stable-diffusion-guidance")
VSD = registry.find("guidance", "stable-diffusion-vsd-guidance")
PP = registry.find("prompt_processor", "stable-diffusion-prompt-processor")

IMAGE = ["--config", "image-fitting.yaml", "trainer.max_steps=1", "data.height=8", "data.width=8",
         "data.n_test_views=1", "data.batch_size=64", "trainer.log_every_n_steps=1",
         "trainer.enable_progress_bar=false", "trainer.enable_model_summary=false", "use_timestamp=false"]
SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._,+=@-]*")


# ------------------------------------------------------------------------------------------------ payloads
class RunsCode:
    """Unpickling this object calls ``os.mkdir(marker)``: the marker exists if and only if the pickle was executed."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


MKDIR = f"{os.mkdir.__module__}.mkdir"  # the global the payload needs, as the refusal names it


def payload(path: Path, marker: Path, kind: str = "zip") -> Path:
    """A checkpoint-like file that runs code when unpickled: ``zip`` as torch.save writes, ``raw`` a bare pickle."""
    path.parent.mkdir(parents=True, exist_ok=True)
    obj = {"state_dict": {"w": torch.zeros(1)}, "framework": {"system_type": "image-fitting-system"},
           "x": RunsCode(marker)}
    if kind == "zip":
        torch.save(obj, path)
    else:  # no tensor in it: a bare pickle of a tensor needs a global of torch's own
        path.write_bytes(pickle.dumps({"framework": obj["framework"], "x": obj["x"]}, protocol=2))
    return path


def one_error_line(err: str) -> str:
    assert "Traceback" not in err, err[-3000:]
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, err[-3000:]
    return lines[0]


def one_line(e: pytest.ExceptionInfo) -> str:
    msg = str(e.value)
    assert msg and "\n" not in msg, msg
    return msg


@pytest.mark.parametrize("kind", ["zip", "raw"])
def test_the_payload_runs_code_when_unpickled(kind, tmp_path):
    marker = tmp_path / "ran"
    path = payload(tmp_path / "evil.ckpt", marker, kind)
    if kind == "zip":
        torch.load(path, weights_only=False)
    else:
        pickle.loads(path.read_bytes())
    assert marker.is_dir()


# ------------------------------------------------------------------------------------------------ checkpoints
@pytest.mark.parametrize("mode", ["--train", "--test", "--export"])
@pytest.mark.parametrize("kind", ["zip", "raw"])
def test_resume_from_a_code_running_checkpoint_is_refused(mode, kind, tmp_path, capsys):
    marker, out = tmp_path / "ran", tmp_path / "out"
    ckpt = payload(tmp_path / "evil.ckpt", marker, kind)
    code = launch.main([*IMAGE, mode, f"exp_root_dir={out}", f"resume={ckpt}"])
    line = one_error_line(capsys.readouterr().err)
    assert code == 2
    assert f"resume '{ckpt}' needs pickled code ({MKDIR}) to load and is refused" in line
    assert not marker.exists() and not out.exists()


def test_system_weights_from_a_code_running_checkpoint_is_refused(tmp_path, capsys):
    marker, out = tmp_path / "ran", tmp_path / "out"
    ckpt = payload(tmp_path / "evil.ckpt", marker)
    code = launch.main([*IMAGE, "--train", f"exp_root_dir={out}", f"system.weights={ckpt}"])
    line = one_error_line(capsys.readouterr().err)
    assert code == 2 and f"system.weights '{ckpt}' needs pickled code ({MKDIR})" in line
    assert not marker.exists() and not out.exists()


def test_a_protocol_0_pickle_is_refused_before_unpickling(tmp_path, capsys):
    marker = tmp_path / "ran"
    ckpt = tmp_path / "old.ckpt"
    ckpt.write_bytes(pickle.dumps(RunsCode(marker), protocol=0))
    pickle.loads(ckpt.read_bytes())  # the file does run code
    assert marker.is_dir()
    marker.rmdir()
    code = launch.main([*IMAGE, "--train", f"exp_root_dir={tmp_path / 'out'}", f"resume={ckpt}"])
    assert code == 2 and "is not a PyTorch checkpoint" in one_error_line(capsys.readouterr().err)
    assert not marker.exists()


# ------------------------------------------------------------------------------------------------ LoRA weights
def vsd(tiny_sd, **cfg):
    return VSD({"pretrained_model_name_or_path": tiny_sd, "pretrained_model_name_or_path_lora": tiny_sd, **cfg},
               prefix="system.guidance")


@pytest.mark.parametrize("where", ["safetensors-name", "bin-only", "bin-file"])
def test_lora_weights_that_are_a_pickle_are_refused(where, tiny_sd, tmp_path):
    marker, folder = tmp_path / "ran", tmp_path / "lora"
    if where == "safetensors-name":  # a pickle saved under the safetensors name
        payload(folder / LORA_FILE, marker)
        target, words = folder, "is a PyTorch/pickle file"
    elif where == "bin-only":  # older diffusers' pickle format, alone in the folder
        payload(folder / PICKLED_LORA_FILE, marker)
        target, words = folder, f"are a pickle and only {LORA_FILE} is read"
    else:  # the .bin named directly
        target, words = payload(folder / PICKLED_LORA_FILE, marker), "is a PyTorch/pickle file"
    with pytest.raises(CheckpointError) as e:
        vsd(tiny_sd, lora_weights_path=str(target))
    msg = one_line(e)
    assert words in msg and "LoRA weights" in msg
    assert not marker.exists()


def test_a_camera_embedding_that_is_a_pickle_does_not_run(tiny_sd, tmp_path):
    folder, marker = tmp_path / "lora", tmp_path / "ran"
    vsd(tiny_sd).save_lora(folder)
    payload(folder / "camera_embedding.safetensors", marker)
    with pytest.raises(Exception):
        vsd(tiny_sd, lora_weights_path=str(folder))
    assert not marker.exists()


def test_a_camera_embedding_that_is_a_pickle_is_one_line(tiny_sd, tmp_path):
    folder = tmp_path / "lora"
    vsd(tiny_sd).save_lora(folder)
    payload(folder / "camera_embedding.safetensors", tmp_path / "ran")
    with pytest.raises(CheckpointError) as e:
        vsd(tiny_sd, lora_weights_path=str(folder))
    assert "only safetensors files are read" in one_line(e)


# ------------------------------------------------------------------------------------------------ embedding cache
def processor(tiny_sd, cache, **cfg):
    return PP({"pretrained_model_name_or_path": tiny_sd, "cache_dir": str(cache), "view_dependent_prompting": False,
               **cfg}, prefix="system.prompt_processor")


def test_a_pickle_in_the_embedding_cache_does_not_run_and_is_re_encoded(tiny_sd, tmp_path, capsys):
    cache, marker = tmp_path / "cache", tmp_path / "ran"
    first = processor(tiny_sd, cache, prompt="a cat")
    path = first.cache_path("a cat")
    payload(path, marker)
    capsys.readouterr()
    again = processor(tiny_sd, cache, prompt="a cat")()
    warnings = [line for line in capsys.readouterr().err.splitlines() if "text-embedding cache" in line]
    assert not marker.exists()
    assert len(warnings) == 1 and f"{path} is not a readable safetensors file" in warnings[0]
    assert torch.equal(again.text_embeddings, first().text_embeddings)
    with safe_open(str(path), framework="pt") as f:  # replaced by a safetensors file of the right prompt
        assert f.metadata()["prompt"] == "a cat"


CACHE_PROMPTS = ["a/b", "a_b", "a b", "a  b", "../../etc/passwd", "/etc/passwd", "-rf", "\x00\x1b[31m", "a" * 300,
                 "a" * 301, "一只猫", "", "."]


def test_cache_files_are_hashes_inside_the_cache_folder_one_per_prompt(tiny_sd, tmp_path):
    cache = tmp_path / "cache"
    pp = processor(tiny_sd, cache, prompt="x")
    paths = [pp.cache_path(p) for p in CACHE_PROMPTS]
    assert len(set(paths)) == len(CACHE_PROMPTS)
    for p in paths:
        assert p.parent == cache and re.fullmatch(r"[0-9a-f]{32}\.safetensors", p.name), p
    other = processor(tiny_sd, tmp_path / "cache2", prompt="x")
    other.model_id = lambda: "someone/another-model"
    assert other.cache_path("a/b") != pp.cache_path("a/b")
    # model and prompt are encoded unambiguously: no split of one text into (model, prompt) matches another
    pp.model_id = lambda: "m\n"
    split_one = pp.cache_path("p")
    pp.model_id = lambda: "m"
    assert pp.cache_path("\np") != split_one


def test_a_cache_file_of_another_prompt_is_never_used(tiny_sd, tmp_path):
    cache = tmp_path / "cache"
    a = processor(tiny_sd, cache, prompt="a/b")
    b_fresh = processor(tiny_sd, cache, prompt="a_b", use_cache=False)()
    assert not torch.equal(a().text_embeddings, b_fresh.text_embeddings)
    shutil.copyfile(a.cache_path("a/b"), a.cache_path("a_b"))  # what a hash collision would look like
    b = processor(tiny_sd, cache, prompt="a_b")()
    assert torch.equal(b.text_embeddings, b_fresh.text_embeddings)


# ------------------------------------------------------------------------------------------------ pretrained models
def copy_model(tiny_sd, tmp_path) -> Path:
    out = tmp_path / "sd"
    shutil.copytree(tiny_sd, out)
    return out


def test_model_weights_only_as_a_pickle_are_refused(tiny_sd, tmp_path):
    model, marker = copy_model(tiny_sd, tmp_path), tmp_path / "ran"
    (model / "unet" / "diffusion_pytorch_model.safetensors").unlink()
    payload(model / "unet" / "diffusion_pytorch_model.bin", marker)
    with pytest.raises(CheckpointError) as e:
        SDS({"pretrained_model_name_or_path": str(model)}, prefix="system.guidance")
    msg = one_line(e)
    assert "system.guidance.pretrained_model_name_or_path" in msg
    assert "holds its weights only as a pickle (diffusion_pytorch_model.bin)" in msg
    assert not marker.exists()


def test_a_pickle_under_a_safetensors_name_in_a_model_folder_is_refused(tiny_sd, tmp_path):
    model, marker = copy_model(tiny_sd, tmp_path), tmp_path / "ran"
    payload(model / "text_encoder" / "model.safetensors", marker)
    with pytest.raises(CheckpointError) as e:
        processor(str(model), tmp_path / "cache", prompt="a cat")
    msg = one_line(e)
    assert "system.prompt_processor.pretrained_model_name_or_path" in msg and "cannot be read" in msg
    assert not marker.exists()


def test_weights_are_loaded_with_use_safetensors(tiny_sd, tmp_path, monkeypatch):
    seen = {}
    for cls in (UNet2DConditionModel, AutoencoderKL, CLIPTextModel):
        original = cls.from_pretrained.__func__

        def recording(klass, *args, _original=original, **kwargs):
            seen[klass.__name__] = kwargs.get("use_safetensors")
            return _original(klass, *args, **kwargs)

        monkeypatch.setattr(cls, "from_pretrained", classmethod(recording))
    SDS({"pretrained_model_name_or_path": tiny_sd})
    processor(tiny_sd, tmp_path / "cache", prompt="a cat")
    assert seen == {"UNet2DConditionModel": True, "AutoencoderKL": True, "CLIPTextModel": True}


@pytest.fixture
def from_pretrained_calls(monkeypatch):
    calls = []
    for cls in (UNet2DConditionModel, AutoencoderKL):
        monkeypatch.setattr(cls, "from_pretrained", classmethod(lambda klass, *a, **k: calls.append(a)))
    return calls


@pytest.mark.parametrize("name", ["https://huggingface.co/stabilityai/stable-diffusion-2-1-base",
                                  "hf://stabilityai/stable-diffusion-2-1-base", "file:///etc/passwd", "s3://b/model"])
def test_a_url_is_not_a_model_id(name, from_pretrained_calls):
    with pytest.raises(ConfigError) as e:
        SDS({"pretrained_model_name_or_path": name}, prefix="system.guidance")
    msg = one_line(e)
    assert f"system.guidance.pretrained_model_name_or_path: '{name}' is a URL" in msg
    assert from_pretrained_calls == []


@pytest.mark.parametrize("name", ["../no/such/model", "a/b/c", "org/..", "-rf", ".hidden", "a--b/c"])
def test_a_name_that_is_neither_a_folder_nor_a_hub_id_is_not_looked_up(name, from_pretrained_calls):
    with pytest.raises(ModelNotFoundError) as e:
        SDS({"pretrained_model_name_or_path": name}, prefix="system.guidance")
    assert f"directory '{name}' does not exist" in one_line(e)
    assert from_pretrained_calls == []


# ------------------------------------------------------------------------------------------------ the source
FORBIDDEN_NAMES = {"trust_remote_code", "custom_pipeline", "add_safe_globals", "safe_globals"}
UNPICKLERS = {"pickle", "cPickle", "dill", "cloudpickle", "marshal", "shelve", "joblib"}


def _call_tokens(code, i):
    """Tokens of the argument list whose '(' is ``code[i]``."""
    depth, out = 0, []
    for t in code[i:]:
        depth += t.string in "([{" and t.type == tokenize.OP
        depth -= t.string in ")]}" and t.type == tokenize.OP
        out.append(t.string)
        if depth == 0:
            return out
    return out


def _has_kwarg(args, name, value):
    return any(args[j : j + 3] == [name, "=", value] for j in range(len(args)))


def unsafe_code(source: str):
    """``(line, what)`` for each construct that could run code from data: eval/exec/compile/__import__ calls,
    remote-code and unpickling switches, unpickling calls, unsafe YAML loads, ``torch.load`` or a Lightning
    ``ckpt_path=`` call without ``weights_only=True``. Comments and docstrings do not count."""
    skip = {tokenize.COMMENT, tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT, tokenize.ENCODING}
    code = [t for t in tokenize.generate_tokens(io.StringIO(source).readline) if t.type not in skip]
    found = []
    for i, t in enumerate(code):
        prev = code[i - 1].string if i else ""
        owner = code[i - 2].string if i > 1 and prev == "." else ""
        nxt = code[i + 1].string if i + 1 < len(code) else ""
        if t.type == tokenize.STRING:
            try:
                value = ast.literal_eval(t.string)
            except (ValueError, SyntaxError):
                continue
            if value in FORBIDDEN_NAMES:
                found.append((t.start[0], value))
            continue
        if t.type != tokenize.NAME:
            continue
        if t.string in ("eval", "exec", "compile", "__import__") and nxt == "(" and prev != ".":
            found.append((t.start[0], f"{t.string}("))
        elif t.string in FORBIDDEN_NAMES:
            found.append((t.start[0], t.string))
        elif t.string == "allow_pickle" and nxt == "=" and code[i + 2].string == "True":
            found.append((t.start[0], "allow_pickle=True"))
        elif owner in UNPICKLERS and t.string in ("load", "loads", "Unpickler", "open"):
            found.append((t.start[0], f"{owner}.{t.string}"))
        elif owner == "yaml" and t.string in ("load", "load_all", "unsafe_load", "full_load", "unsafe_load_all"):
            found.append((t.start[0], f"yaml.{t.string}"))
        elif owner == "torch" and t.string == "load" and nxt == "(":
            if not _has_kwarg(_call_tokens(code, i + 1), "weights_only", "True"):
                found.append((t.start[0], "torch.load without weights_only=True"))
        elif prev == "." and nxt == "(":
            args = _call_tokens(code, i + 1)
            if "ckpt_path" in args and not _has_kwarg(args, "weights_only", "True"):
                found.append((t.start[0], f"{t.string}(ckpt_path=...) without weights_only=True"))
    return found


SOURCES = [REPO_ROOT / "launch.py", *sorted((REPO_ROOT / "framework").rglob("*.py")),
           *sorted((REPO_ROOT / "systems").rglob("*.py"))]


def test_the_source_never_evaluates_code_or_unpickles_unsafely():
    found = {str(p.relative_to(REPO_ROOT)): unsafe_code(p.read_text()) for p in SOURCES}
    assert len(SOURCES) > 20
    assert {k: v for k, v in found.items() if v} == {}


def test_the_scan_finds_each_unsafe_construct():
    bad = '''
x = eval("1")
exec(code)
f = compile(src, "f", "exec")
m = __import__("os")
model = AutoModel.from_pretrained(name, trust_remote_code=True)
kw = {"trust_remote_code": True}
pipe = DiffusionPipeline.from_pretrained(name, custom_pipeline="x")
torch.serialization.add_safe_globals([Foo])
a = np.load(p, allow_pickle=True)
d = pickle.load(f)
d = pickle.loads(b)
y = yaml.load(s)
y = yaml.unsafe_load(s)
s = torch.load(p)
s = torch.load(p, weights_only=False)
trainer.fit(system, ckpt_path=path)
'''
    assert len(unsafe_code(bad)) == bad.strip().count("\n") + 1
    good = '''
"""Docs may name trust_remote_code, eval( and pickle.load(."""
model.eval()  # exec(
pattern = re.compile("x")
spec.loader.exec_module(module)
s = torch.load(p, map_location="cpu", weights_only=True)
trainer.fit(system, datamodule=dm, ckpt_path=resume, weights_only=True)
y = yaml.safe_load(s)
err = pickle.UnpicklingError
'''
    assert unsafe_code(good) == []


# ------------------------------------------------------------------------------------------------ resolvers
def table_rows(text: str, heading: str):
    """``(names, second column)`` of each row of the table under ``heading`` whose first column holds `names`."""
    section = text.split(heading, 1)[1].split("\n#", 1)[0]
    rows = []
    for line in section.splitlines():
        if line.startswith("| `"):
            cells = [c.strip() for c in line.split("|")[1:-1]]
            rows.append((re.findall(r"`+([\w.]+)`+", cells[0]), cells[1]))
    return rows


def test_registered_resolvers_are_the_documented_ones():
    register_resolvers()
    rows = table_rows((REPO_ROOT / "docs" / "security.md").read_text(), "## Config resolvers")
    documented = [n for names, _ in rows for n in names]
    assert len(documented) == len(set(documented))
    assert set(documented) == set(BaseContainer._resolvers) and "oc.coerce" not in documented
    assert {n for names, source in rows if source == "this project" for n in names} == set(RESOLVERS)
    # the project's list in the module docstring and in the README
    import framework.resolvers as module

    assert {n for names, _ in table_rows(module.__doc__, "| resolver |") for n in names} == set(RESOLVERS)
    bullet = (REPO_ROOT / "README.md").read_text().split("* **Resolvers**", 1)[1].split("\n* ", 1)[0]
    assert {n for n in re.findall(r"`([\w.]+)`", bullet) if not n.startswith("oc.")} == set(RESOLVERS)


def test_no_resolver_evaluates_its_arguments(tmp_path):
    import inspect

    marker = tmp_path / "ran"
    expression = f"__import__('os').mkdir({str(marker)!r})"
    for name, fn in RESOLVERS.items():
        n_args = len([p for p in inspect.signature(fn).parameters.values() if p.default is inspect.Parameter.empty])
        try:
            fn(*[expression] * n_args)
        except (TypeError, ValueError):
            pass
    assert not marker.exists()


def test_oc_coerce_which_imports_modules_is_refused(tmp_path, monkeypatch, capsys):
    from omegaconf.resolvers.oc import coerce

    mods = tmp_path / "mods"
    mods.mkdir()
    for name in ("coerce_probe_a", "coerce_probe_b"):
        (mods / f"{name}.py").write_text(f"import os\nos.mkdir({str(tmp_path / name)!r})\nx = 1\n")
    monkeypatch.syspath_prepend(str(mods))
    with pytest.raises(TypeError):
        coerce("coerce_probe_a.x", 1)
    assert (tmp_path / "coerce_probe_a").is_dir()  # the resolver does import what it is given
    code = launch.main([*IMAGE, "--train", f"exp_root_dir={tmp_path / 'out'}", "tag=${oc.coerce:coerce_probe_b.x,1}"])
    line = one_error_line(capsys.readouterr().err)
    assert code == 2 and "Unsupported interpolation type oc.coerce" in line
    assert not (tmp_path / "coerce_probe_b").exists() and "coerce_probe_b" not in sys.modules


# ------------------------------------------------------------------------------------------------ names
ESCAPES = ["../../x", "/etc/passwd", "-rf", "\x00\x1b[31m", "a" * 300, "一只猫 on a café", "..", ".", "a/../../b", "~",
           " ", "\u202e/evil", "x/" * 40]


def train(root, tag, *extra):
    """One training step of image-fitting with ``tag`` given as a JSON (YAML) string: any character gets through."""
    return launch.main([*IMAGE, "--train", f"exp_root_dir={root}", f"tag={json.dumps(tag)}", *extra])


@pytest.mark.parametrize("prompt", ESCAPES, ids=lambda p: ascii(p)[:24])
def test_a_prompt_cannot_choose_where_the_trial_folder_is(prompt, tmp_path):
    root = tmp_path / "out"
    assert train(root, prompt) == 0
    assert list(tmp_path.iterdir()) == [root]  # nothing was written beside exp_root_dir
    [exp] = root.iterdir()
    [trial] = exp.iterdir()
    assert exp.name == "image-fitting" and trial.name == safe_name(prompt)
    assert SAFE_NAME.fullmatch(trial.name) and ".." not in trial.name and len(trial.name) <= 120
    assert (trial / "ckpts" / "last.ckpt").is_file()
    assert all(p.resolve().is_relative_to(trial.resolve()) for p in exp.rglob("*"))


def test_with_a_timestamp_the_trial_folder_is_still_one_safe_name(tmp_path):
    root = tmp_path / "out"
    assert train(root, "../../x", "use_timestamp=true") == 0
    [trial] = (root / "image-fitting").iterdir()
    assert re.fullmatch(re.escape(safe_name("../../x")) + r"@\d{8}-\d{6}", trial.name)


def test_tags_that_clean_to_the_same_text_get_their_own_folders_and_none_is_overwritten(tmp_path, capsys):
    root = tmp_path / "out"
    assert train(root, "a/b") == 0 and train(root, "a_b") == 0
    exp = root / "image-fitting"
    assert sorted(p.name for p in exp.iterdir()) == sorted(["a_b", safe_name("a/b")])
    assert safe_name("a/b") != "a_b"
    trial = exp / safe_name("a/b")
    before = {p: p.read_bytes() for p in trial.rglob("*") if p.is_file()}
    capsys.readouterr()
    assert train(root, "a/b") == 2
    assert "exists already and is never overwritten" in one_error_line(capsys.readouterr().err)
    assert {p: p.read_bytes() for p in trial.rglob("*") if p.is_file()} == before


def test_the_3d_recipes_tag_from_the_prompt_is_made_safe(tmp_path):
    launch.import_modules()
    prompt = "../../etc/passwd -rf \x1b[31m"
    for config in ("dreamfusion-sd.yaml", "prolificdreamer.yaml", "sds-image.yaml", "vsd-image.yaml", "vsd.yaml"):
        exp, _, _ = load_experiment(config, [f"system.prompt_processor.prompt={json.dumps(prompt)}",
                                             f"exp_root_dir={tmp_path}", "use_timestamp=false"])
        assert exp.tag == prompt.replace(" ", "_"), config  # ${rmspace:${system.prompt_processor.prompt},_}
        trial = trial_dir(exp)
        assert trial.parent.parent == tmp_path and trial.name == safe_name(exp.tag)
        assert SAFE_NAME.fullmatch(trial.name)


def test_name_tag_and_timestamp_are_each_one_path_component(tmp_path):
    exp = ExperimentConfig(name="../../n", tag="/t", timestamp="../../s", exp_root_dir=str(tmp_path))
    trial = trial_dir(exp)
    assert trial.parent.parent == tmp_path
    assert trial.parent.name == safe_name("../../n") and trial.name == f"{safe_name('/t')}@{safe_name('../../s')}"


@pytest.mark.parametrize("value,words", [("\x1b[31m", "control characters are not allowed"),
                                         ("@x", "quote it as a YAML string")])
def test_a_command_line_value_yaml_cannot_read_is_one_line(value, words, tmp_path, capsys):
    out = tmp_path / "out"
    code = launch.main([*IMAGE, "--train", f"exp_root_dir={out}", f"tag={value}"])
    line = one_error_line(capsys.readouterr().err)
    assert code == 2 and f"config error: tag: the command-line value {value!r} is not valid YAML" in line
    assert words in line and not out.exists()


def test_an_export_name_cannot_leave_the_export_folder(tmp_path, capsys):
    """An exporter's file name (``mesh-exporter``'s save_name, or any exporter's) cannot write outside save/."""
    from framework.utils.export_output import ExportOutput
    from systems.image_fitting import ImageFittingSystem

    system = ImageFittingSystem({"loss": {"lambda_mse": 1.0}})
    system.set_save_dir(tmp_path / "trial" / "save")
    system.export_outputs = lambda: [ExportOutput("../../../escaped.png", b"x")]
    with pytest.raises(ConfigError, match="leaves the export folder"):
        system.export()
    assert not list(tmp_path.rglob("escaped.png"))
