"""The Stable Diffusion prompt processor: embeddings by hand, view directions, stacking order, cache, errors."""

import gc
import weakref

import pytest
import torch
from transformers import CLIPTextModel, CLIPTokenizer

import framework.prompt_processors  # noqa: F401  (registration)
from framework import registry
from framework.errors import ConfigError, ModelNotFoundError

PP = registry.find("prompt_processor", "stable-diffusion-prompt-processor")
SIDE, FRONT, BACK, OVERHEAD = 0, 1, 2, 3


def processor(path, cache, **cfg):
    return PP({"pretrained_model_name_or_path": path, "cache_dir": str(cache), "prompt": "a photo of a cat", **cfg})


def hand_embeddings(path, prompts):
    tok = CLIPTokenizer.from_pretrained(path, subfolder="tokenizer")
    enc = CLIPTextModel.from_pretrained(path, subfolder="text_encoder")
    ids = tok(prompts, padding="max_length", max_length=77, truncation=True, return_tensors="pt").input_ids
    with torch.no_grad():
        return enc(ids).last_hidden_state


def test_embeddings_and_stacking_order(tiny_sd, tiny_prompt_utils):
    pu = tiny_prompt_utils
    assert pu.prompts_vd == [
        "a photo of a cat, side view",
        "a photo of a cat, front view",
        "a photo of a cat, back view",
        "a photo of a cat, overhead view",
    ]
    prompts = ["a photo of a cat", "", "a photo of a cat, front view", "a photo of a cat, back view"]
    hand = hand_embeddings(tiny_sd, prompts)
    torch.testing.assert_close(pu.text_embeddings[0], hand[0])
    torch.testing.assert_close(pu.uncond_text_embeddings[0], hand[1])
    torch.testing.assert_close(pu.text_embeddings_vd[FRONT], hand[2])
    torch.testing.assert_close(pu.text_embeddings_vd[BACK], hand[3])

    elevation = torch.tensor([0.0, 0.0, 0.0, 0.0, 70.0, 0.0])
    azimuth = torch.tensor([10.0, 90.0, 180.0, -170.0, 0.0, 350.0])
    idx = [FRONT, SIDE, BACK, BACK, OVERHEAD, FRONT]
    emb = pu.get_text_embeddings(elevation, azimuth, torch.ones(6))
    assert emb.shape == (12, 77, 32)
    torch.testing.assert_close(emb[:6], pu.text_embeddings_vd[idx])  # [cond; uncond]
    torch.testing.assert_close(emb[6:], pu.uncond_text_embeddings_vd[idx])
    flat = pu.get_text_embeddings(elevation, azimuth, torch.ones(6), view_dependent_prompting=False)
    torch.testing.assert_close(flat[:6], hand[0].expand(6, -1, -1))
    torch.testing.assert_close(flat[6:], hand[1].expand(6, -1, -1))


def test_thresholds_and_per_view_prompts(tiny_sd, tiny_embedding_cache):
    pu = processor(tiny_sd, tiny_embedding_cache, front_threshold=30.0, prompt_back="the back of a cat",
                   negative_prompt="blurry")()
    assert pu.prompts_vd[BACK] == "the back of a cat"
    assert pu.negative_prompt == "blurry"
    idx = pu.direction_index(torch.zeros(2), torch.tensor([20.0, 40.0]), torch.ones(2))
    assert idx.tolist() == [FRONT, SIDE]
    hand = hand_embeddings(tiny_sd, ["the back of a cat", "blurry"])
    torch.testing.assert_close(pu.text_embeddings_vd[BACK], hand[0])
    torch.testing.assert_close(pu.uncond_text_embeddings_vd[SIDE], hand[1])
    prefix = processor(tiny_sd, tiny_embedding_cache, view_dependent_prompt_front=True)()
    assert prefix.prompts_vd[FRONT] == "front view of a photo of a cat"


def test_without_view_dependent_prompting(tiny_sd, tiny_embedding_cache):
    pu = processor(tiny_sd, tiny_embedding_cache, view_dependent_prompting=False)()
    assert pu.prompts_vd == ["a photo of a cat"]
    emb = pu.get_text_embeddings(torch.tensor([80.0, 0.0]), torch.tensor([0.0, 180.0]), torch.ones(2))
    torch.testing.assert_close(emb[:2], pu.text_embeddings.expand(2, -1, -1))


def test_cache_is_used_and_the_text_encoder_is_freed(tiny_sd, tmp_path, monkeypatch):
    refs = []
    original = CLIPTextModel.from_pretrained.__func__

    def recording(cls, *args, **kwargs):
        model = original(cls, *args, **kwargs)
        refs.append(weakref.ref(model))
        return model

    monkeypatch.setattr(CLIPTextModel, "from_pretrained", classmethod(recording))
    first = processor(tiny_sd, tmp_path, negative_prompt="ugly")()
    gc.collect()
    assert len(refs) == 1 and refs[0]() is None  # loaded once, freed after use
    files = sorted(tmp_path.glob("*.safetensors"))
    assert len(files) == 7  # prompt, negative prompt, the empty prompt, four view prompts

    second = processor(tiny_sd, tmp_path, negative_prompt="ugly")()
    assert len(refs) == 1  # everything came from the cache
    assert torch.equal(first.text_embeddings_vd, second.text_embeddings_vd)
    processor(tiny_sd, tmp_path, negative_prompt="ugly", use_cache=False)
    assert len(refs) == 2
    processor(tiny_sd, tmp_path, negative_prompt="ugly", prompt="a dog")
    assert len(refs) == 3 and len(list(tmp_path.glob("*.safetensors"))) == 7 + 5  # only new prompts encoded


def test_empty_prompt_is_a_clear_error(tiny_sd, tmp_path):
    with pytest.raises(ConfigError) as e:
        PP({"pretrained_model_name_or_path": tiny_sd, "cache_dir": str(tmp_path), "prompt": "  "},
           prefix="system.prompt_processor")
    assert "system.prompt_processor.prompt" in str(e.value) and "\n" not in str(e.value)


def test_missing_model_offline(tmp_path):
    with pytest.raises(ModelNotFoundError) as e:
        PP({"pretrained_model_name_or_path": "someone/not-a-cached-model", "cache_dir": str(tmp_path)})
    msg = str(e.value)
    assert "someone/not-a-cached-model" in msg and "pretrained_model_name_or_path" in msg and "\n" not in msg


def test_a_prompt_over_the_encoder_length_is_reported_once(tiny_sd, tmp_path, capsys):
    long = " ".join(["a red cube on a table"] * 14)  # 84 words: more than 77 tokens
    tok = CLIPTokenizer.from_pretrained(tiny_sd, subfolder="tokenizer")
    n = len(tok(long, verbose=False).input_ids)
    assert n > 77
    PP({"pretrained_model_name_or_path": tiny_sd, "cache_dir": str(tmp_path), "prompt": long},
       prefix="system.prompt_processor")
    lines = [line for line in capsys.readouterr().err.splitlines() if "warning" in line.lower()]
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"warning: system.prompt_processor.prompt: '{long}' is {n} tokens") and "77" in lines[0]
    assert "4 more of the prompts" in lines[0]  # the four view prompts lose their suffix
    PP({"pretrained_model_name_or_path": tiny_sd, "cache_dir": str(tmp_path), "prompt": long})  # from the cache
    assert len([line for line in capsys.readouterr().err.splitlines() if line.startswith("warning:")]) == 1
    processor(tiny_sd, tmp_path)
    assert "warning" not in capsys.readouterr().err  # a prompt that fits says nothing


def test_a_negative_prompt_over_the_length_names_its_key(tiny_sd, tmp_path, capsys):
    long = " ".join(["blurry"] * 90)
    processor(tiny_sd, tmp_path, negative_prompt=long, view_dependent_prompting=False)
    (line,) = [line for line in capsys.readouterr().err.splitlines() if "warning" in line.lower()]
    assert line.startswith("warning: negative_prompt: ") and "more of the prompts" not in line


def test_null_and_negative_embeddings_are_kept_apart(tiny_sd, tiny_embedding_cache):
    pu = processor(tiny_sd, tiny_embedding_cache, negative_prompt="blurry")()
    hand = hand_embeddings(tiny_sd, ["blurry", ""])
    torch.testing.assert_close(pu.uncond_text_embeddings[0], hand[0])  # threestudio's uncond: the negative prompt
    torch.testing.assert_close(pu.get_null_embeddings(3, torch.device("cpu")), hand[1].expand(3, -1, -1))
    assert not torch.allclose(hand[0], hand[1])
