"""Videos: an mp4 of the right frame count and size, and a warning (not a failed run) without the encoder."""

import importlib.util

import imageio.v3 as iio
import numpy as np

from framework.utils.saving import Saver


def test_video_has_the_frames_written(tmp_path):
    frames = [np.full((15, 20, 3), 20 * i, dtype=np.uint8) for i in range(6)]
    path = Saver(tmp_path).save_video("clip.mp4", frames, fps=10)
    video = np.stack(list(iio.imiter(path)))
    assert video.shape[0] == 6
    assert video.shape[1:3] == (16, 20)  # padded to even sizes for yuv420p
    assert abs(float(video[3].mean()) - 60.0) < 4.0


def test_missing_encoder_warns_in_one_line_and_keeps_the_run(tmp_path, monkeypatch, capsys):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "imageio_ffmpeg" else real(name, *a))
    frames = [np.zeros((8, 8, 3), dtype=np.uint8)] * 2
    assert Saver(tmp_path).save_video("it10-test.mp4", frames) is None
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("warning: the video")
    assert "pip install imageio-ffmpeg" in err[0]
    assert not (tmp_path / "it10-test.mp4").exists()
