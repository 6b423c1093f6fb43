"""Throughput of the PyTorch rasterizer (nvdiff-rasterizer's back end without nvdiffrast): faces and pixels per second.

Meshes: icospheres of 5k, 20k and 80k faces (radius 0.5) seen whole from an orbit camera at distance 2 (fovy 45),
one view per render. Columns (milliseconds, medians of ``--repeats`` after a warm-up):

* ``visible``: step 1 alone, which face each pixel sees (no gradient);
* ``rasterize``: step 1 + the differentiable perspective-correct barycentrics (nvdiffrast's ``rasterize``);
* ``render``: a whole ``nvdiff-rasterizer`` forward (isosurface, rasterize, normals, positions, material, background,
  antialiasing of opacity, normal, depth and colour) and ``render+bwd`` with the backward of a colour + normal loss
  to the vertex positions;
* faces/s and pixels/s of the whole forward (``render``) and of step 1.

``--warp`` (when ``warp`` imports) also times step 1 done by warp-lang's BVH ray casting (``wp.Mesh`` built per
render, as a mesh that changes every step needs) and checks that both find the same faces.

    python benchmarks/bench_raster.py [--resolutions 64 256] [--subdivisions 4 5 6] [--threads N] [--device cpu]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import framework.backgrounds  # noqa: E402,F401
import framework.materials  # noqa: E402,F401
from framework import registry  # noqa: E402
from framework.data.cameras import camera_batch  # noqa: E402
from framework.renderers.nvdiff_rasterizer import NVDiffRasterizer  # noqa: E402
from framework.renderers.rasterize_torch import rasterize, visible_faces  # noqa: E402
from lab.raster_checks import MeshGeometry, sphere_mesh  # noqa: E402


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device: torch.device, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        sync(device)
        start = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000.0


def warp_visible(mesh, batch, device: torch.device):
    """A function running step 1 with warp (BVH build + one ray per pixel), or None without warp."""
    try:
        import warp as wp
    except ImportError:
        return None
    from benchmarks.warp_cast import cast_kernel

    wp.config.quiet = True
    wp.init()
    wdev = "cuda:0" if device.type == "cuda" else "cpu"
    v = mesh.v_pos.to(device).contiguous()
    f = mesh.t_pos_idx.to(device).int().reshape(-1).contiguous()
    o = batch["rays_o"].reshape(-1, 3).to(device).contiguous()
    d = batch["rays_d"].reshape(-1, 3).to(device).contiguous()
    face = torch.empty(o.shape[0], dtype=torch.int32, device=device)

    def run():
        wmesh = wp.Mesh(points=wp.from_torch(v, dtype=wp.vec3), indices=wp.from_torch(f, dtype=wp.int32))
        wp.launch(cast_kernel, dim=o.shape[0], inputs=[wmesh.id, wp.from_torch(o, dtype=wp.vec3),
                                                       wp.from_torch(d, dtype=wp.vec3), wp.from_torch(face)],
                  device=wdev)
        wp.synchronize_device(wdev)
        return face

    return run


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--resolutions", type=int, nargs="+", default=[64, 256])
    p.add_argument("--subdivisions", type=int, nargs="+", default=[4, 5, 6])
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--device", default="cpu")
    p.add_argument("--warp", action="store_true", help="also time warp-lang's BVH ray casting for step 1")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    print(f"device {device}, {torch.get_num_threads()} threads, torch {torch.__version__}")
    header = ("| faces | pixels | visible ms | rasterize ms | render ms | render+bwd ms | faces/s (render) | "
              "pixels/s (render) | pixels/s (visible) |")
    if args.warp:
        header += " warp BVH+cast ms | warp agrees |"
    print(header)
    print("|" + "---|" * (header.count("|") - 1))
    for sub in args.subdivisions:
        base = sphere_mesh(0.5, sub)
        for res in args.resolutions:
            batch = camera_batch(torch.tensor([20.0]), torch.tensor([30.0]), torch.tensor([2.0]), torch.tensor([45.0]),
                                 res, res)
            batch["light_positions"] = batch["camera_positions"].clone()
            batch = {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}
            geometry = MeshGeometry(base, trainable=True).to(device)
            renderer = NVDiffRasterizer(
                {"backend": "torch"}, geometry=geometry,
                material=registry.find("material", "no-material")({}).to(device),
                background=registry.find("background", "solid-color-background")({}).to(device),
            ).to(device)
            tri = base.t_pos_idx.to(device)

            def clip():
                v = geometry.v_pos.detach()
                return renderer.context(device).vertex_transform(v, batch["mvp_mtx"])

            c = clip()
            t_visible = timed(lambda: visible_faces(c[0], tri, res, res), device, args.repeats)
            t_raster = timed(lambda: rasterize(c, tri, (res, res)), device, args.repeats)
            with torch.no_grad():
                t_render = timed(lambda: renderer(**batch), device, args.repeats)

            def forward_backward():
                out = renderer(**batch)
                (out["comp_rgb"].square().mean() + out["comp_normal"].square().mean()).backward()
                geometry.v_pos.grad = None

            t_backward = timed(forward_backward, device, args.repeats)
            pixels = res * res
            row = (f"| {base.n_faces} | {res}x{res} | {t_visible:.1f} | {t_raster:.1f} | {t_render:.1f} | "
                   f"{t_backward:.1f} | {base.n_faces / t_render * 1e3:.2e} | {pixels / t_render * 1e3:.2e} | "
                   f"{pixels / t_visible * 1e3:.2e} |")
            if args.warp:
                run = warp_visible(base, batch, device)
                if run is None:
                    row += " (no warp) | |"
                else:
                    t_warp = timed(run, device, args.repeats)
                    ours = visible_faces(c[0], tri, res, res)
                    agree = float((run().long().cpu() == ours.cpu()).float().mean())
                    row += f" {t_warp:.1f} | {agree:.4f} |"
            print(row, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
