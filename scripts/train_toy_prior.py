"""Train the toy prior and write it as a Stable Diffusion folder in diffusers format (fp16, 9 MB).

    python scripts/train_toy_prior.py --threads 2          # writes load/toy-sd (about an hour on 2 CPU cores)
    python scripts/train_toy_prior.py --out /tmp/toy --quick   # a few steps of each stage, to check the pipeline
    python scripts/train_toy_prior.py --from-model load/toy-sd --open-steps 4000 --out /tmp/toy-open   # stage 4 only

Stages, each cached in --work with the settings it was made with, so an interrupted run resumes at the stage it was
in and a cache made with other settings (or from another --from-model) is redone, never reused:
1. data: renders of every (colour, shape) pair of ``lab.toy`` from random cameras, with their prompts;
2. vae: an AutoencoderKL trained as a denoising autoencoder (inputs with a little Gaussian noise, clean targets;
   foreground pixels weighted up, plus a loss on 4x-downsampled images so colours survive the white background);
   its latent statistics are then folded into it so latents have zero mean and unit variance (scaling_factor 1.0);
3. unet: a UNet2DConditionModel on the precomputed latents and text embeddings (v-prediction on SD's betas rescaled
   to zero terminal SNR, see lab/models/toy_prior.py; timesteps above SNR 5 down-weighted by 5/SNR as in
   min-SNR weighting; 10% empty prompts for classifier-free guidance; AdamW with warm-up and cosine decay; EMA
   weights, which are the ones saved);
4. open wordings (with ``--open-steps``): more UNet training with the shape-only and colour-only prompts weighted up
   (``--open-shares``), so that ``"a cube"`` spreads over the colours, plain and with each view suffix (docs/toy.md);
   ``--from-model`` starts it from an earlier output instead of stages 2-3;
5. the folder: model_index.json, unet/, vae/, text_encoder/, tokenizer/, scheduler/.
Every random number comes from --seed, so the same command gives the same model on the same machine and library
versions.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from lab.models.tiny_sd import TINY_TEXT_ENCODER, build_clip_tokenizer  # noqa: E402
from lab.models.toy_prior import (  # noqa: E402
    TOY_SCHEDULER,
    build_unet,
    build_vae,
    fold_latent_statistics,
    latent_statistics,
)
from lab.toy.dataset import WORDINGS, ToySet, all_prompts, make_offpalette_set, make_set  # noqa: E402


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


# The settings each cached stage depends on (besides its upstream stage's): a cache made with other ones is redone.
STAGE_SETTINGS = {
    "data": ("seed", "views_per_pair", "offpalette_renders"),
    "vae": ("seed", "vae_steps", "vae_batch", "vae_lr", "vae_input_noise", "fg_weight", "kl_weight",
            "offpalette_share", "flat_share"),
    "unet": ("seed", "unet_steps", "unet_batch", "unet_lr", "warmup", "ema_decay", "min_snr_gamma", "uncond_share",
             "shape_share", "colour_share"),
    "open": ("seed", "open_steps", "open_lr", "open_shares", "open_t_min", "unet_batch", "warmup", "ema_decay",
             "min_snr_gamma"),
}


def stage_settings(name: str, args, upstream: dict) -> dict:
    """What a stage's result depends on: its own settings and its upstream stage's (as JSON reads them back)."""
    settings = {"stage": name, "upstream": upstream, **{k: getattr(args, k) for k in STAGE_SETTINGS[name]}}
    return json.loads(json.dumps(settings))


def _stamp(path: Path) -> Path:
    return path.with_name(path.name + ".settings.json")


def cached(path: Path, exists: bool, settings: dict) -> bool:
    """Whether the cache at ``path`` holds this stage made with ``settings``; one made with other settings (or
    before they were recorded) is said so and redone, never reused."""
    if not exists:
        return False
    try:
        old = json.loads(_stamp(path).read_text())
    except (OSError, ValueError):  # none (an older cache, or interrupted before it was written) or damaged
        old = {}
    if old == settings:
        return True
    old = old if isinstance(old, dict) else {}
    changed = sorted(k for k in settings if k != "upstream" and old.get(k) != settings[k])
    why = "unrecorded settings" if not old else f"other {', '.join(changed)}" if changed else "another upstream stage"
    log(f"{settings['stage']}: the cache {path} was made with {why}; redoing the stage")
    return False


def record(path: Path, settings: dict) -> None:
    _stamp(path).write_text(json.dumps(settings, indent=1))


def model_settings(folder: Path) -> dict:
    """What identifies an earlier output given to --from-model: its path and its UNet's weights."""
    import hashlib

    weights = folder / "unet" / "diffusion_pytorch_model.safetensors"
    digest = hashlib.sha256(weights.read_bytes()).hexdigest() if weights.is_file() else None
    return {"from_model": str(folder.resolve()), "unet_sha256": digest}


def stage_data(work: Path, args) -> dict:
    path = work / "data.pt"
    settings = stage_settings("data", args, {})
    if cached(path, path.exists(), settings):
        return torch.load(path)
    t0 = time.time()
    s = make_set(args.views_per_pair, seed=args.seed)
    off = make_offpalette_set(args.offpalette_renders, seed=args.seed + 7)
    data = {"images": s.images, "labels": s.labels, "views": s.views, "offpalette": off}
    torch.save(data, path)
    record(path, settings)
    log(f"data: {len(s.labels)} renders of the palette, {off.shape[0]} off-palette, in {time.time() - t0:.0f} s")
    return data


def vae_batch(palette: torch.Tensor, offpalette: torch.Tensor, gen: torch.Generator, args) -> torch.Tensor:
    """A VAE training batch in [-1, 1]: palette renders, off-palette renders and flat colour images mixed."""
    from lab.toy.dataset import random_colours

    n = args.vae_batch
    kind = torch.multinomial(torch.tensor([1.0 - args.offpalette_share - args.flat_share, args.offpalette_share,
                                           args.flat_share]), n, replacement=True, generator=gen)
    images = palette[torch.randint(0, palette.shape[0], (n,), generator=gen)].float() / 255
    off = offpalette[torch.randint(0, offpalette.shape[0], (n,), generator=gen)].float() / 255
    flat = random_colours(n, gen)[:, :, None, None].expand(-1, -1, *images.shape[-2:])
    images = torch.where((kind == 1).view(-1, 1, 1, 1), off, images)
    images = torch.where((kind == 2).view(-1, 1, 1, 1), flat, images)
    return images * 2.0 - 1.0


def vae_loss(vae, clean: torch.Tensor, gen: torch.Generator, args) -> torch.Tensor:
    sigma = torch.rand(clean.shape[0], 1, 1, 1, generator=gen) * args.vae_input_noise
    noisy = clean + sigma * torch.randn(clean.shape, generator=gen)
    posterior = vae.encode(noisy).latent_dist
    z = posterior.mean + posterior.std * torch.randn(posterior.mean.shape, generator=gen)
    recon = vae.decode(z).sample
    # foreground: pixels that differ from the image's corner colour (its background)
    fg = ((clean - clean[:, :, :1, :1]).abs().amax(dim=1, keepdim=True) > 0.04).float()
    weight = 1.0 + (args.fg_weight - 1.0) * fg
    err = recon - clean
    pixel = (weight * (err.abs() + err**2)).mean()
    coarse = F.mse_loss(F.avg_pool2d(recon, 4), F.avg_pool2d(clean, 4))
    return pixel + 4.0 * coarse + args.kl_weight * posterior.kl().mean()


def stage_vae(work: Path, data: dict, args):
    from diffusers import AutoencoderKL

    path = work / "vae"
    settings = stage_settings("vae", args, stage_settings("data", args, {}))
    if cached(path, (path / "config.json").exists(), settings):
        return AutoencoderKL.from_pretrained(path)
    images, offpalette = data["images"], data["offpalette"]
    holdout = torch.arange(images.shape[0]) % 50 == 0
    off_holdout = torch.arange(offpalette.shape[0]) % 50 == 0
    train, off_train = images[~holdout], offpalette[~off_holdout]
    gen = torch.Generator().manual_seed(args.seed + 1)
    vae = build_vae(args.seed + 2)
    opt = torch.optim.AdamW(vae.parameters(), lr=args.vae_lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=args.vae_lr, total_steps=args.vae_steps, pct_start=0.05)
    t0 = time.time()
    for step in range(args.vae_steps):
        clean = vae_batch(train, off_train, gen, args)
        loss = vae_loss(vae, clean, gen, args)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        opt.step()
        sched.step()
        if step % 100 == 0 or step == args.vae_steps - 1:
            log(f"vae step {step}: loss {loss.item():.4f} ({time.time() - t0:.0f} s)")
    vae.eval()
    with torch.no_grad():
        for name, held in (("palette", images[holdout][:256]), ("off-palette", offpalette[off_holdout][:256])):
            x = held.float() / 127.5 - 1.0
            recon = vae.decode(vae.encode(x).latent_dist.mean).sample.clamp(-1, 1)
            mse = F.mse_loss((recon + 1) / 2, (x + 1) / 2).item()
            log(f"vae: holdout PSNR on {name} renders {-10 * math.log10(mse):.1f} dB")
    log(f"vae: {args.vae_steps} steps in {time.time() - t0:.0f} s")
    # latent statistics over the palette's training images (what the UNet models), folded into the VAE
    with torch.no_grad():
        means = torch.cat([vae.encode(train[i : i + 256].float() / 127.5 - 1.0).latent_dist.mean
                           for i in range(0, train.shape[0], 256)])
    mean, std = latent_statistics(means)
    log(f"latent mean {[round(v, 2) for v in mean.tolist()]}, std {[round(v, 2) for v in std.tolist()]}")
    fold_latent_statistics(vae, mean, std)
    vae.save_pretrained(path)
    record(path, settings)
    return vae


@torch.no_grad()
def encode_all(vae, images: torch.Tensor):
    means, stds = [], []
    for i in range(0, images.shape[0], 256):
        d = vae.encode(images[i : i + 256].float() / 127.5 - 1.0).latent_dist
        means.append(d.mean)
        stds.append(d.std)
    return torch.cat(means), torch.cat(stds)


def build_text(work: Path):
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    tok_dir = build_clip_tokenizer(work / "tokenizer")
    tokenizer = CLIPTokenizer.from_pretrained(str(tok_dir))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(3)
        text_encoder = CLIPTextModel(CLIPTextConfig(**TINY_TEXT_ENCODER))
    text_encoder.requires_grad_(False).eval()
    return tokenizer, text_encoder


@torch.no_grad()
def embed(tokenizer, text_encoder, prompts):
    ids = tokenizer(prompts, padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                    return_tensors="pt").input_ids
    return text_encoder(ids)[0]


def unet_inputs(data: dict, vae, tokenizer, text_encoder):
    """Latent means and standard deviations of every render, the prompt embedding table, and (N, 4) the index of each
    render's prompt in each of ``WORDINGS`` (full, shape only, colour only, empty), view suffix included."""
    t0 = time.time()
    lat_mean, lat_std = encode_all(vae, data["images"])
    prompts = all_prompts()
    table = embed(tokenizer, text_encoder, prompts)
    index = {p: i for i, p in enumerate(prompts)}
    toy = ToySet(data["images"], data["labels"], data["views"], torch.zeros(0), torch.zeros(0))
    prompt_ids = torch.tensor([[index[toy.prompt(i, w)] for w in WORDINGS] for i in range(len(toy.labels))])
    log(f"unet: latents and {len(prompts)} prompt embeddings in {time.time() - t0:.0f} s")
    return lat_mean, lat_std, table, prompt_ids


def train_unet(unet, inputs, shares, steps: int, lr: float, warmup: int, seed: int, args, name: str,
               t_min: int = 0):
    """``steps`` of v-prediction training of ``unet`` in place; the wording of each sample drawn with ``shares``
    (full, shape only, colour only, empty), its timestep uniformly from ``t_min`` to the last. AdamW with warm-up
    and cosine decay to a tenth, min-SNR weighting, EMA weights copied in at the end."""
    from diffusers import DDPMScheduler
    from diffusers.training_utils import EMAModel, compute_snr

    lat_mean, lat_std, table, prompt_ids = inputs
    wording_share = torch.tensor(shares)
    scheduler = DDPMScheduler(**{k: v for k, v in TOY_SCHEDULER.items() if k != "set_alpha_to_one"})
    unet.train()
    ema = EMAModel(unet.parameters(), decay=args.ema_decay)
    opt = torch.optim.AdamW(unet.parameters(), lr=lr, weight_decay=1e-2)

    def lr_at(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, steps - warmup)
        floor = 0.1
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_at)
    gen = torch.Generator().manual_seed(seed)
    n = lat_mean.shape[0]
    t0 = time.time()
    running = None
    for step in range(steps):
        idx = torch.randint(0, n, (args.unet_batch,), generator=gen)
        x0 = lat_mean[idx] + lat_std[idx] * torch.randn(lat_mean[idx].shape, generator=gen)
        wording = torch.multinomial(wording_share, args.unet_batch, replacement=True, generator=gen)
        cond = prompt_ids[idx, wording]
        noise = torch.randn(x0.shape, generator=gen)
        t = torch.randint(t_min, scheduler.config.num_train_timesteps, (args.unet_batch,), generator=gen)
        xt = scheduler.add_noise(x0, noise, t)
        pred = unet(xt, t, encoder_hidden_states=table[cond]).sample
        target = scheduler.get_velocity(x0, noise, t)
        weight = (args.min_snr_gamma / compute_snr(scheduler, t)).clamp(max=1.0)  # 1 where SNR <= gamma
        loss = (weight * ((pred - target) ** 2).mean(dim=(1, 2, 3))).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(unet.parameters(), 1.0)
        opt.step()
        sched.step()
        ema.step(unet.parameters())
        running = loss.item() if running is None else 0.98 * running + 0.02 * loss.item()
        if step % 200 == 0 or step == steps - 1:
            log(f"{name} step {step}: loss {running:.4f} lr {sched.get_last_lr()[0]:.2e} ({time.time() - t0:.0f} s)")
    ema.copy_to(unet.parameters())
    unet.eval()
    log(f"{name}: {steps} steps in {time.time() - t0:.0f} s")
    return unet


def stage_unet(work: Path, inputs, args):
    path = work / "unet"
    settings = stage_settings("unet", args, stage_settings("vae", args, stage_settings("data", args, {})))
    if cached(path, (path / "config.json").exists(), settings):
        from diffusers import UNet2DConditionModel

        return UNet2DConditionModel.from_pretrained(path)
    shares = [1.0 - args.shape_share - args.colour_share - args.uncond_share, args.shape_share, args.colour_share,
              args.uncond_share]
    unet = train_unet(build_unet(args.seed + 4), inputs, shares, args.unet_steps, args.unet_lr, args.warmup,
                      args.seed + 5, args, "unet")
    unet.save_pretrained(path)
    record(path, settings)
    return unet


def stage_open(work: Path, inputs, unet, args):
    """More training of ``unet`` with the open wordings weighted up (``--open-shares``): the base stage leaves the
    free attribute of ``"a cube"`` or ``"a red object"`` unevenly spread, and unevenly per view suffix."""
    path = work / "unet-open"
    data = stage_settings("data", args, {})
    upstream = (model_settings(Path(args.from_model)) if args.from_model
                else stage_settings("unet", args, stage_settings("vae", args, data)))
    settings = stage_settings("open", args, {"model": upstream, "data": data})
    if cached(path, (path / "config.json").exists(), settings):
        from diffusers import UNet2DConditionModel

        return UNet2DConditionModel.from_pretrained(path)
    unet = train_unet(unet, inputs, args.open_shares, args.open_steps, args.open_lr, args.warmup, args.seed + 6,
                      args, "open wordings", t_min=args.open_t_min)
    unet.save_pretrained(path)
    record(path, settings)
    return unet


def load_model(folder: Path):
    """VAE, tokenizer, text encoder and UNet of an earlier output of this script, in float32."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    vae = AutoencoderKL.from_pretrained(folder / "vae", torch_dtype=torch.float32).eval()
    tokenizer = CLIPTokenizer.from_pretrained(folder / "tokenizer")
    text_encoder = CLIPTextModel.from_pretrained(folder / "text_encoder", torch_dtype=torch.float32).eval()
    text_encoder.requires_grad_(False)
    unet = UNet2DConditionModel.from_pretrained(folder / "unet", torch_dtype=torch.float32)
    return vae, tokenizer, text_encoder, unet


def write_known_prompts(folder: Path) -> None:
    """``known_prompts.json``: every prompt the UNet was trained on, which the prompt processor checks prompts
    against (framework/prompt_processors/vocabulary.py)."""
    from framework.prompt_processors.vocabulary import KNOWN_PROMPTS_FILE
    from lab.toy.dataset import SHAPELESS_NOUN
    from lab.toy.scenes import COLOURS, SHAPES

    description = (
        f"'<a|an> <colour> <shape>', '<a|an> <shape>' (any colour), '<a|an> <colour> {SHAPELESS_NOUN}' (any shape) "
        f"and the empty prompt, each optionally with ', front view', ', side view', ', back view' or "
        f"', overhead view'; colours {', '.join(COLOURS)}; shapes {', '.join(SHAPES)}"
    )
    (folder / KNOWN_PROMPTS_FILE).write_text(json.dumps({"description": description, "prompts": all_prompts()},
                                                        indent=1) + "\n")


def assemble(out: Path, vae, unet, tokenizer, text_encoder) -> None:
    from diffusers import DDIMScheduler, StableDiffusionPipeline

    pipe = StableDiffusionPipeline(
        vae=vae.half(),
        text_encoder=text_encoder.half(),
        tokenizer=tokenizer,
        unet=unet.half(),
        scheduler=DDIMScheduler(**TOY_SCHEDULER),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    with tempfile.TemporaryDirectory() as tmp:
        pipe.save_pretrained(tmp, safe_serialization=True)
        # the tokenizer as SD 2.x repositories ship it (vocab.json, merges.txt), not transformers' re-serialisation
        shutil.rmtree(Path(tmp) / "tokenizer")
        build_clip_tokenizer(Path(tmp) / "tokenizer")
        write_known_prompts(Path(tmp))
        if out.exists():
            shutil.rmtree(out)
        shutil.copytree(tmp, out)
    out.chmod(0o755)  # copytree keeps the temporary folder's private mode
    size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    log(f"wrote {out} ({size / 2**20:.1f} MB)")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="load/toy-sd", help="the diffusers folder to write")
    parser.add_argument("--work", default=None,
                        help="folder of the cached stages (default .cache/toy-prior; with --quick "
                             ".cache/toy-prior-quick)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads (on a shared 2-core machine one thread runs faster than two)")
    parser.add_argument("--quick", action="store_true", help="a few steps of each stage (pipeline check only)")
    parser.add_argument("--views-per-pair", type=int, default=250)
    parser.add_argument("--offpalette-renders", type=int, default=3000,
                        help="renders in random colours (greys, muted shades, any hue) for the VAE only")
    parser.add_argument("--offpalette-share", type=float, default=0.35, help="share of them in a VAE batch")
    parser.add_argument("--flat-share", type=float, default=0.1,
                        help="share of flat single-colour images in a VAE batch")
    parser.add_argument("--vae-steps", type=int, default=1200)
    parser.add_argument("--vae-batch", type=int, default=16)
    parser.add_argument("--vae-lr", type=float, default=2e-3)
    parser.add_argument("--vae-input-noise", type=float, default=0.1, help="largest std of the input noise")
    parser.add_argument("--fg-weight", type=float, default=5.0)
    parser.add_argument("--kl-weight", type=float, default=1e-8)
    parser.add_argument("--unet-steps", type=int, default=3000)
    parser.add_argument("--unet-batch", type=int, default=48)
    parser.add_argument("--unet-lr", type=float, default=1e-3)
    parser.add_argument("--warmup", type=int, default=100)
    parser.add_argument("--ema-decay", type=float, default=0.998)
    parser.add_argument("--min-snr-gamma", type=float, default=5.0)
    parser.add_argument("--uncond-share", type=float, default=0.1, help="share of empty prompts")
    parser.add_argument("--shape-share", type=float, default=0.15, help="share of shape-only prompts ('a cube')")
    parser.add_argument("--colour-share", type=float, default=0.15,
                        help="share of colour-only prompts ('a red object')")
    parser.add_argument("--open-steps", type=int, default=0,
                        help="steps of a last stage that weights the open wordings up (0: none)")
    parser.add_argument("--open-lr", type=float, default=3e-4)
    parser.add_argument("--open-shares", type=float, nargs=4, default=[0.25, 0.35, 0.25, 0.15],
                        metavar=("FULL", "SHAPE", "COLOUR", "EMPTY"), help="wording shares of that stage")
    parser.add_argument("--open-t-min", type=int, default=0,
                        help="lowest training timestep of that stage (0-999; e.g. 500: only the noisier half)")
    parser.add_argument("--from-model", default=None,
                        help="start from this earlier output's VAE, text encoder and UNet: only the data and the "
                             "open-wording stages run")
    args = parser.parse_args(argv)
    if args.from_model and not (Path(args.from_model) / "model_index.json").is_file():
        print(f"error: --from-model {args.from_model} is not a diffusers model folder (no model_index.json): give an "
              "earlier output of this script, e.g. load/toy-sd", file=sys.stderr)
        return 2
    problem = None
    if args.open_steps < 0:
        problem = f"--open-steps {args.open_steps}: give 0 (no open-wording stage) or more steps"
    elif args.from_model and args.open_steps == 0:
        problem = "--from-model trains only the open-wording stage: give --open-steps N (e.g. 4000)"
    elif not 0 <= args.open_t_min < TOY_SCHEDULER["num_train_timesteps"]:
        last = TOY_SCHEDULER["num_train_timesteps"] - 1
        problem = f"--open-t-min {args.open_t_min}: give a timestep from 0 to {last}"
    elif args.open_t_min and not args.open_steps:
        problem = "--open-t-min applies to the open-wording stage only: give --open-steps N (e.g. 1500) as well"
    elif not args.open_lr > 0:
        problem = f"--open-lr {args.open_lr}: give a learning rate above 0 (e.g. 3e-4)"
    elif any(not v >= 0 for v in args.open_shares) or abs(sum(args.open_shares) - 1.0) > 1e-6:
        problem = (f"--open-shares {' '.join(f'{v:g}' for v in args.open_shares)}: give four non-negative shares "
                   "(full, shape only, colour only, empty) that sum to 1")
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    out = Path(args.out)
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / "model_index.json").is_file())):
        # the folder is replaced at the end: refuse anything that is not an earlier model folder
        print(f"error: --out {out} exists and is not a diffusers model folder (no model_index.json); it would be "
              "replaced: give a new folder or an earlier output of this script", file=sys.stderr)
        return 2
    # a pipeline check keeps its own caches: in the full run's folder it would replace them (other settings)
    work = Path(args.work or (".cache/toy-prior-quick" if args.quick else ".cache/toy-prior"))
    if work.exists() and not work.is_dir():
        print(f"error: --work {work} is a file: give a folder for the cached stages", file=sys.stderr)
        return 2
    if args.quick:
        args.views_per_pair, args.offpalette_renders, args.vae_steps, args.unet_steps, args.warmup = 4, 8, 3, 3, 1
        args.open_steps = min(args.open_steps, 3)
    torch.set_num_threads(args.threads)
    work.mkdir(parents=True, exist_ok=True)
    (work / "args.json").write_text(json.dumps(vars(args), indent=2))
    t0 = time.time()
    data = stage_data(work, args)
    if args.from_model:
        vae, tokenizer, text_encoder, unet = load_model(Path(args.from_model))
        inputs = unet_inputs(data, vae, tokenizer, text_encoder)
    else:
        vae = stage_vae(work, data, args)
        tokenizer, text_encoder = build_text(work)
        inputs = unet_inputs(data, vae, tokenizer, text_encoder)
        unet = stage_unet(work, inputs, args)
    if args.open_steps > 0:
        unet = stage_open(work, inputs, unet, args)
    assemble(out, vae, unet, tokenizer, text_encoder)
    log(f"total {time.time() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
