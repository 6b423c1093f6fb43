"""End to end on the toy prior: ProlificDreamer's three stages chained as docs/toy.md and the README run them
("a green cone": configs/toy/vsd.yaml, then vsd-geometry.yaml from its checkpoint, then vsd-texture.yaml from that
one), each scored by scripts/evaluate_toy.py against the ground-truth cone.

Measured (docs/toy.md, seed 0, 24-view orbit): stage 1 IoU 0.834, colour error 0.083, mesh IoU 0.736 (its NeRF
meshed at density 3); stage 2 IoU 0.836, mesh IoU 0.748; stage 3 IoU 0.846, colour error 0.082, judged green; the best
IoU another primitive reaches is 0.542. Required: the refined mesh at least as close to the cone as stage 1's (within
0.03, the run-to-run noise of a mesh IoU at this grid size), every stage's silhouette beating the best wrong shape, and
the textured cone judged green, with a colour error below 0.12 and at most 0.015 above stage 1's. The texture stage
keeps stage 1's colour accuracy (with t from 0.02 in stage 1, R4: 0.082 to 0.087, and from R4's stage-2 checkpoint
0.090 at seed 1, 0.085 at CFG 1; with stage 1 at CFG 7.5 it lowered it, 0.090 to 0.075). The 0.12 bound tells a
trained texture from the stage-1 texture carried onto the stage-2 mesh untrained (0.218; 0.195 in R4's chain) and from
a grey cone, as the toy gave before its VAE learnt colours off the palette (0.24-0.29). The bound relative to stage 1
catches the texture recipe at threestudio's CFG 7.5 instead of its 1.5: from the same stage-2 checkpoint that texture
scores 0.106 (saturation 0.98), 0.023 above stage 1's 0.083 (R4's chain: 0.107 against 0.082).
"""

import sys
from pathlib import Path

import pytest

from tests.fixtures.toy_chain import chain_block

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "scripts"))

MESH_IOU_NOISE = 0.03
MIN_STAGE2_MESH_IOU = 0.35
MAX_TEXTURE_COLOUR_ERROR = 0.12
TEXTURE_COLOUR_NOISE = 0.015


def test_readme_and_toy_docs_show_the_same_chain():
    readme, toy = chain_block(REPO / "README.md"), chain_block(REPO / "docs" / "toy.md")
    assert readme == toy and len(readme) == 3
    assert [c[2] for c in readme] == ["configs/toy/vsd.yaml", "configs/toy/vsd-geometry.yaml",
                                      "configs/toy/vsd-texture.yaml"]


@pytest.mark.slow
def test_toy_chain_refines_the_shape_and_colours_it(toy_chain):
    from evaluate_toy import evaluate_trial

    s1 = evaluate_trial(toy_chain["toy-vsd"], n_views=24)  # meshed at density 3 (configs/toy/vsd.yaml), as converted
    s2 = evaluate_trial(toy_chain["toy-vsd-geometry"], n_views=24)
    s3 = evaluate_trial(toy_chain["toy-vsd-texture"], n_views=24)
    assert s2["mesh_iou"] >= s1["mesh_iou"] - MESH_IOU_NOISE and s2["mesh_iou"] > MIN_STAGE2_MESH_IOU, (s1, s2)
    for s in (s1, s2, s3):
        assert s["iou"] > s["reference_iou"], s
    assert s3["colour"] == "green" and s3["colour_error"] < MAX_TEXTURE_COLOUR_ERROR, (s1, s3)
    assert s3["colour_error"] <= s1["colour_error"] + TEXTURE_COLOUR_NOISE, (s1, s3)
