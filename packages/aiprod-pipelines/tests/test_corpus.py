"""The captioned video corpus: deterministic, held-out combinations, captions that say what is shown."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import numpy as np
import pytest

from aiprod_core.config import validate
from aiprod_core.errors import AiprodError, ConfigError
from aiprod_pipelines.corpus import (
    DIRECTIONS,
    PALETTE,
    CorpusConfig,
    caption,
    make_video_corpus,
    read_captions,
    render_clip,
    split_combinations,
)
from aiprod_pipelines.eval import colour_votes, shown_colour
from aiprod_pipelines.media import read_mp4

SMALL = dict(train_clips=6, heldout_clips=4, size=32, frames=5, fps=8)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return make_video_corpus(tmp_path_factory.mktemp("vc") / "corpus", CorpusConfig(**SMALL))


def test_layout_and_captions(corpus):
    meta = json.loads((corpus / "corpus.json").read_text())
    assert meta["clips"] == {"train": 6, "heldout": 4} and meta["config"]["size"] == 32
    pattern = re.compile(r"^a (\w+) (circle|square|triangle) moving (left|right|up|down) over a photo of .+$")
    for split, n in (("train", 6), ("heldout", 4)):
        entries = read_captions(corpus / split)
        assert len(entries) == n and len(list((corpus / split).glob("*.mp4"))) == n
        for e in entries:
            m = pattern.match(e["caption"])
            assert m and m.group(1) == e["colour"] and m.group(3) == e["direction"] and e["split"] == split
            clip = read_mp4(e["path"])
            assert clip.frames.shape == (5, 32, 32, 3) and clip.fps == 8 and clip.audio is None


def test_clips_show_the_captioned_colour_and_motion():
    rng = np.random.default_rng(0)
    for colour in ("red", "yellow", "green", "blue"):
        for direction, (dx, dy) in DIRECTIONS.items():
            frames = render_clip(colour, "circle", direction, "chelsea", size=64, frames=9, rng=rng)
            assert shown_colour(frames) == colour
            # centroid of the shape's pixels moves in the stated direction
            target = np.asarray(PALETTE[colour], float)
            cents = []
            for f in (frames[0], frames[-1]):
                ys, xs = np.nonzero(np.abs(f.astype(float) - target).sum(-1) < 60)
                cents.append((xs.mean(), ys.mean()))
            mx, my = cents[1][0] - cents[0][0], cents[1][1] - cents[0][1]
            assert mx * dx + my * dy > 0.25 * 64 and abs(mx * dy) + abs(my * dx) < 2  # along, not across


def test_deterministic_by_seed(tmp_path, corpus):
    again = make_video_corpus(tmp_path / "again", CorpusConfig(**SMALL))
    for split in ("train", "heldout"):
        a, b = read_captions(corpus / split), read_captions(again / split)
        assert [e["caption"] for e in a] == [e["caption"] for e in b]
        for ea, eb in zip(a, b):
            assert np.array_equal(read_mp4(ea["path"]).frames, read_mp4(eb["path"]).frames)
    other = make_video_corpus(tmp_path / "other", CorpusConfig(**{**SMALL, "seed": 1, "heldout_clips": 0}))
    fa, fo = read_mp4(corpus / "train" / "clip_00000.mp4").frames, read_mp4(other / "train" / "clip_00000.mp4").frames
    assert not np.array_equal(fa, fo)


def test_heldout_combinations_never_in_train(corpus):
    cfg = CorpusConfig(**SMALL)
    combos = split_combinations(cfg)
    held, train = set(combos["heldout"]), set(combos["train"])
    assert held and not held & train
    assert len(held) == cfg.heldout_per_colour * len(cfg.colours)
    for c in cfg.colours:  # every colour (and shape, direction) alone is still trained on
        assert any(t[0] == c for t in train)
    assert {t[1] for t in train} == set(cfg.shapes) and {t[2] for t in train} == set(cfg.directions)
    triple = lambda e: (e["colour"], e["shape"], e["direction"])  # noqa: E731
    assert all(triple(e) in held for e in read_captions(corpus / "heldout"))
    assert all(triple(e) in train for e in read_captions(corpus / "train"))
    assert sorted(map(tuple, json.loads((corpus / "corpus.json").read_text())["heldout_combinations"])) == sorted(held)


def test_refuses_existing_and_bad_settings(corpus):
    with pytest.raises(AiprodError, match="already exists; pass --overwrite"):
        make_video_corpus(corpus, CorpusConfig(**SMALL))
    with pytest.raises(ConfigError) as err:
        validate(CorpusConfig, {"frames": 6, "size": 40, "colours": ["red", "mauve"]}, "t")
    text = str(err.value)
    assert "frames must be 1 + 4k" in text and "multiple of 16" in text
    assert caption("red", "circle", "left", "chelsea") == "a red circle moving left over a photo of a cat"


def test_tool_script(tmp_path, repo):
    tool = repo / "tools" / "make_video_corpus.py"
    bad = subprocess.run([sys.executable, str(tool), str(tmp_path / "x"), "--frames", "6"], capture_output=True,
                         text=True)
    assert bad.returncode == 2 and "make_video_corpus: error:" in bad.stderr and "frames" in bad.stderr
    ok = subprocess.run([sys.executable, str(tool), str(tmp_path / "vc"), "--train", "2", "--heldout", "1",
                         "--size", "32", "--frames", "5", "--quiet"], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    assert len(read_captions(tmp_path / "vc" / "train")) == 2
    meta = json.loads((tmp_path / "vc" / "corpus.json").read_text())
    assert meta["command"].endswith("--train 2 --heldout 1 --size 32 --frames 5")


def test_colour_votes_ignore_grey():
    grey = np.full((2, 16, 16, 3), 128, np.uint8)
    assert shown_colour(grey) is None and max(colour_votes(grey).values()) == 0.0
