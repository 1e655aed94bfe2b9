"""AudioFolder by steps: segment slots handed out by the core epoch sampler; headers indexed once."""

from __future__ import annotations

import numpy as np
import soundfile as sf
import torch

from aiprod_audio.data import AudioFolder


def test_epochs_cover_every_file_once_across_ranks(tmp_path, monkeypatch):
    for k in range(4):  # 0.1 s each: one slot of 0.2 s per file; file k has amplitude 0.1 (k + 1)
        t = np.arange(2400) / 24000
        sf.write(str(tmp_path / f"{k}.wav"), (0.1 * (k + 1) * np.sin(2 * np.pi * 440 * t)).astype(np.float32), 24000)
    seen = {}
    for rank in (0, 1):
        monkeypatch.setenv("RANK", str(rank))
        monkeypatch.setenv("WORLD_SIZE", "2")
        ds = AudioFolder([tmp_path], 24000, 4800, seed=1)
        rows = [ds.batch(1, torch.Generator().manual_seed(s), step=s)[0, 0] for s in range(4)]
        seen[rank] = [int(round(float(r.abs().max()) * 10)) - 1 for r in rows]
        assert torch.equal(rows[1], ds.batch(1, torch.Generator().manual_seed(1), step=1)[0, 0])  # pure of the step
    for epoch in (slice(0, 2), slice(2, 4)):
        assert sorted(seen[0][epoch] + seen[1][epoch]) == [0, 1, 2, 3]
    assert (tmp_path / AudioFolder.INDEX).is_file()
    (tmp_path / "4.wav").write_bytes((tmp_path / "0.wav").read_bytes())
    assert len(AudioFolder([tmp_path], 24000, 4800)) == 5  # a new file: the cached index is rebuilt
