import av
import numpy as np
import pytest
import torch

from aiprod_core.errors import AiprodError
from aiprod_upsampler import data as D


def test_synthetic_pairs_are_deterministic_and_area_consistent():
    a = D.synthetic_pairs(torch.Generator().manual_seed(0), 2, 16, 3, 16, 16)
    b = D.synthetic_pairs(torch.Generator().manual_seed(0), 2, 16, 3, 16, 16)
    c = D.synthetic_pairs(torch.Generator().manual_seed(1), 2, 16, 3, 16, 16)
    assert torch.equal(a["high"], b["high"]) and not torch.equal(a["high"], c["high"])
    assert a["low"].shape == (2, 16, 3, 8, 8)
    assert torch.allclose(a["low"], a["high"].reshape(2, 16, 3, 8, 2, 8, 2).mean(dim=(4, 6)), atol=1e-6)
    assert 0.9 < float(a["high"].std()) < 1.1


def test_uint8_roundtrip_and_procedural_clips():
    v = D.procedural_clips(0, 3, 5, 32, 32, chunk=2)
    assert v.dtype == torch.uint8 and v.shape == (3, 3, 5, 32, 32)
    f = D.to_float(v)
    assert f.min() >= -1 and f.max() <= 1 and torch.equal(D.to_uint8(f), v)
    assert torch.equal(v, D.procedural_clips(0, 3, 5, 32, 32, chunk=2))  # same seed, same clips


def write_mp4(path, frames, h, w):
    with av.open(str(path), "w") as out:
        stream = out.add_stream("mpeg4", rate=24)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        for i in range(frames):
            img = np.full((h, w, 3), 20 * i, dtype=np.uint8)
            img[:, : w // 2, 0] = 200
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)


def test_read_video_clips(tmp_path):
    write_mp4(tmp_path / "a.mp4", 6, 48, 80)
    write_mp4(tmp_path / "b.mp4", 3, 48, 80)  # too short: skipped
    clips = D.read_video_clips(tmp_path, frames=5, h=32, w=32, limit=4)
    assert clips.dtype == torch.uint8 and clips.shape == (1, 3, 5, 32, 32)
    assert clips[0, 0, 0, :, :8].float().mean() > 150  # left half red survives resize + centre crop
    with pytest.raises(AiprodError, match="no clip of 9 frames"):
        D.read_video_clips(tmp_path, frames=9, h=32, w=32, limit=4)
    with pytest.raises(AiprodError, match="no .mp4"):
        D.read_video_clips(tmp_path / "nothing", frames=5, h=32, w=32, limit=4)
