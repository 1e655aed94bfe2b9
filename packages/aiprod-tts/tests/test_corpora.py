"""LJSpeech and LibriTTS roots in one run: global speaker ids, unique utterance ids, the core sampler."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from aiprod_core.errors import AiprodError
from aiprod_tts.corpora import CorpusRoot, StepItems, load_corpora


def _wav(path, seconds=0.2, sr=16000):
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), np.sin(np.arange(int(seconds * sr)) * 0.05).astype(np.float32), sr)


def _corpora(tmp_path):
    lj = tmp_path / "LJSpeech"
    for i in range(3):
        _wav(lj / "wavs" / f"LJ001-000{i}.wav")
    (lj / "metadata.csv").write_text("".join(f"LJ001-000{i}|Text {i}.|Text {i}.\n" for i in range(3)))
    lt = tmp_path / "LibriTTS"
    for spk, n in (("84", 2), ("19", 1)):
        for j in range(n):
            _wav(lt / spk / "121" / f"{spk}_121_{j}.wav")
            (lt / spk / "121" / f"{spk}_121_{j}.normalized.txt").write_text(f"Speaker {spk} line {j}.")
    return lj, lt


def test_two_layouts_in_one_run(tmp_path):
    lj, lt = _corpora(tmp_path)
    utts, names = load_corpora([CorpusRoot(format="ljspeech", root=str(lj)), CorpusRoot(format="libritts", root=str(lt))])
    assert names == ["LJSpeech", "LibriTTS/19", "LibriTTS/84"]
    assert [u.speaker for u in utts] == [0, 0, 0, 1, 2, 2]
    assert utts[0].id == "0_LJ001-0000" and utts[3].id == "1_19_121_0" and utts[4].text == "Speaker 84 line 0."
    single, _ = load_corpora([CorpusRoot(format="libritts", root=str(lt), max_utterances=2)])
    assert [u.id for u in single] == ["19_121_0", "84_121_0"] and [u.speaker for u in single] == [0, 1]
    with pytest.raises(AiprodError, match="metadata.csv"):
        load_corpora([CorpusRoot(format="ljspeech", root=str(lt))])


def test_step_items_partition_an_epoch_across_ranks(monkeypatch):
    drawn = []
    for rank in (0, 1):
        monkeypatch.setenv("RANK", str(rank))
        monkeypatch.setenv("WORLD_SIZE", "2")
        items = StepItems(12, batch_size=3, seed=4)
        drawn.append([i for step in range(2) for i in items(step)])
    assert not set(drawn[0]) & set(drawn[1]) and sorted(drawn[0] + drawn[1]) == list(range(12))


def test_acoustic_training_on_two_corpora(corpus, tmp_path):
    """The espeak-ng LJSpeech corpus + the same recordings laid out as LibriTTS (two speakers): one run."""
    import json
    import shutil
    from pathlib import Path

    from aiprod_core.pipeline import load_document
    from aiprod_tts.data import load_ljspeech
    from aiprod_tts.train import make_task

    libri = tmp_path / "LibriTTS"
    for i, u in enumerate(load_ljspeech(corpus)[:4]):
        d = libri / ("spk_a" if i % 2 else "spk_b") / "1"
        d.mkdir(parents=True, exist_ok=True)
        shutil.copy(u.wav, d / f"{u.id}.wav")
        (d / f"{u.id}.normalized.txt").write_text(u.text)
    tiny = Path(__file__).resolve().parents[3] / "configs/train/tiny/tts.yaml"
    roots = json.dumps([{"format": "ljspeech", "root": str(corpus)}, {"format": "libritts", "root": str(libri)}])
    _, _, cfg = load_document(tiny, ["data.root=null", f"data.roots={roots}", f"data.cache_dir={tmp_path / 'f'}",
                                     f"train.output_dir={tmp_path / 'run'}", "train.max_steps=2",
                                     "model.config.acoustic.n_speakers=3"])
    task = make_task(cfg)
    assert task.speakers == [corpus.name, "LibriTTS/spk_a", "LibriTTS/spk_b"]
    assert sorted({int(task.data.item(i)["speaker"]) for i in range(len(task.data))}) == [0, 1, 2]
    batch = task.make_batch(0, None)
    assert batch["mels"].shape[0] == cfg.train.batch_size
