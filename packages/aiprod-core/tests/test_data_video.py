"""Seeking decode with fps resampling: the frames shown at the requested instants."""

from __future__ import annotations

import numpy as np
import pytest

from aiprod_core.data.video import probe, read_window
from aiprod_core.errors import AiprodError

av = pytest.importorskip("av")


def _video(path, n, fps, size=(32, 48), gop=10):
    """Frame ``i`` is flat grey ``4 * i`` (colour conversion + H.264 keep flat frames to +-1)."""
    with av.open(str(path), "w") as box:
        s = box.add_stream("libx264", rate=fps)
        s.height, s.width = size
        s.pix_fmt = "yuv420p"
        s.options = {"g": str(gop), "crf": "10"}
        for i in range(n):
            f = av.VideoFrame.from_ndarray(np.full((*size, 3), 4 * i, np.uint8), format="rgb24")
            f.pts = i
            box.mux(s.encode(f))
        box.mux(s.encode(None))
    return path


def _ids(frames):
    return [int(round(float(f.mean()) / 4)) for f in frames]


def test_probe_and_seek(tmp_path):
    p = _video(tmp_path / "a.mp4", 60, 20)
    info = probe(p)
    assert (info.frames, info.width, info.height) == (60, 48, 32) and info.fps == 20 and abs(info.duration - 3) < 0.05
    assert _ids(read_window(p, 0.0, 60)) == list(range(60))
    assert _ids(read_window(p, 1.5, 5)) == [30, 31, 32, 33, 34]           # mid-GOP start, source rate
    assert _ids(read_window(p, 1.5, 5, fps=10)) == [30, 32, 34, 36, 38]   # half rate: every other frame
    assert _ids(read_window(p, 0.0, 4, fps=40)) == [0, 0, 1, 1]           # double rate: each frame twice
    assert _ids(read_window(p, 2.9, 2)) == [58, 59]
    with pytest.raises(AiprodError, match="past the end"):
        read_window(p, 2.95, 5)
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"not a video")
    with pytest.raises(AiprodError, match="bad.mp4"):
        probe(bad)
