"""Mp4FolderSource: the folder is indexed once (container headers, cached), clips are decoded by seeking."""

from __future__ import annotations

import numpy as np
import pytest

av = pytest.importorskip("av")


def _video(path, n=40, fps=20, offset=0):
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as box:
        s = box.add_stream("libx264", rate=fps)
        s.width, s.height, s.pix_fmt = 48, 32, "yuv420p"
        s.options = {"g": "8", "crf": "10"}
        for i in range(n):
            f = av.VideoFrame.from_ndarray(np.full((32, 48, 3), offset + 6 * i, np.uint8), format="rgb24")
            f.pts = i
            box.mux(s.encode(f))
        box.mux(s.encode(None))


def test_index_is_cached_and_decode_seeks(tmp_path, monkeypatch):
    import aiprod_core.data.video as video
    from aiprod_hwvae.data import Mp4FolderSource

    _video(tmp_path / "clips" / "a.mp4")
    _video(tmp_path / "clips" / "sub" / "b.mp4", n=10)
    src = Mp4FolderSource(tmp_path / "clips", frames=5, height=32, width=32, stride=3)
    assert (tmp_path / "clips" / Mp4FolderSource.INDEX).is_file()
    assert [p.name for p in src.usable] == ["a.mp4"]  # b: 10 frames < (5 - 1) x 3 + 1
    x = src._decode(tmp_path / "clips" / "a.mp4", 17)  # frames 17, 20, 23, 26, 29
    ids = [round(float((f.mean() + 1) * 127.5) / 6) for f in x]
    assert ids == [17, 20, 23, 26, 29]

    def no_probe(path):
        raise AssertionError("probed again")

    monkeypatch.setattr(video, "probe", no_probe)
    again = Mp4FolderSource(tmp_path / "clips", frames=5, height=32, width=32, stride=3)  # from the cached index
    assert again._count(tmp_path / "clips" / "a.mp4") == 40


def test_steps_draw_files_by_epochs_and_workers_agree(tmp_path, monkeypatch):
    from aiprod_hwvae.data import Mp4FolderSource, batch

    for k in range(4):  # file k: grey 40 k + 6 i, so a clip's mean brightness names its file
        _video(tmp_path / "clips" / f"{k}.mp4", n=6, offset=40 * k)

    def file_of(clips):
        return [int(((c.mean() + 1) * 127.5) // 40) for c in clips]

    drawn = {}
    for rank in (0, 1):
        monkeypatch.setenv("RANK", str(rank))
        monkeypatch.setenv("WORLD_SIZE", "2")
        src = Mp4FolderSource(tmp_path / "clips", frames=5, height=16, width=16, seed=3)
        clips = [batch(src, 1, None, step=s)[0] for s in range(4)]  # two epochs of 2 steps x 2 ranks
        drawn[rank] = file_of(clips)
        workers = Mp4FolderSource(tmp_path / "clips", frames=5, height=16, width=16, seed=3, num_workers=2)
        again = [batch(workers, 1, None, step=s)[0] for s in range(4)]
        assert all(a.equal(b) for a, b in zip(again, clips))  # workers: the same clips
    for epoch in (slice(0, 2), slice(2, 4)):  # each epoch: every file once over both ranks
        assert sorted(drawn[0][epoch] + drawn[1][epoch]) == [0, 1, 2, 3]
