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
    _cli_args,
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


def test_prompt_field_is_the_caption_without_the_photo(corpus):
    for e in read_captions(corpus / "train"):
        assert e["prompt"] == f"a {e['colour']} {e['shape']} moving {e['direction']}"
        assert e["caption"].startswith(e["prompt"] + " over a photo of ")


def test_latent_cache_feeds_the_shdt_recipe(corpus, tmp_path):
    """tools/cache_latents.py: one shard sample per clip, size and text field, readable by the shdt recipe's
    cached source."""
    pytest.importorskip("aiprod_hwvae")
    pytest.importorskip("aiprod_textenc")
    pytest.importorskip("webdataset")
    shdt_data = pytest.importorskip("aiprod_shdt.data")
    import torch

    from aiprod_core.data.shards import ShardReader
    from aiprod_core.registry import get_registry
    from aiprod_pipelines.latent_cache import cache_corpus, resize_video

    reg = get_registry()
    torch.manual_seed(0)
    vae = reg.component("video-autoencoder", "hwvae").build("tiny").save_pretrained(tmp_path / "vae")
    enc = reg.component("text-encoder", "gemma3-lora").build("tiny").save_pretrained(tmp_path / "enc")
    n = cache_corpus(corpus / "train", tmp_path / "cache", vae, enc, sizes=[32, 16],
                     text_fields=["caption", "prompt"], progress=False, batch_size=4)
    assert n == 6 * 2 * 2
    reader = ShardReader(tmp_path / "cache")
    keys = reader.index["key"].tolist()
    assert keys[:2] == ["16-clip_00000", "16-clip_00000_prompt"] and "32-clip_00005_prompt" in keys
    clip = reader[keys.index("32-clip_00000")]
    lat, text, mask = clip["latents"], clip["text"], clip["text_mask"]
    assert lat.shape == (16, 2, 4, 4) and text.shape[-1] == 32 and mask.all() and len(mask) == len(text)
    assert reader[keys.index("16-clip_00000")]["latents"].shape == (16, 2, 2, 2)
    stage = shdt_data.Stage(resolution=32, frames=5, steps=1, batch_size=3)
    batch = shdt_data.CachedClips(tmp_path / "cache").batch(stage, ["1:1"], torch.Generator().manual_seed(0))
    assert batch["latents"].shape == (3, 16, 2, 4, 4)
    # area resize: the mean colour is kept
    video = torch.rand(3, 5, 32, 32)
    assert torch.allclose(resize_video(video, 16).mean((-1, -2)), video.mean((-1, -2)), atol=1e-6)
    with pytest.raises(AiprodError, match="text-field nope"):
        cache_corpus(corpus / "train", tmp_path / "c2", vae, enc, text_fields=["nope"], progress=False)


def _pixels(frame: np.ndarray, colour: str) -> np.ndarray:
    """Where ``frame`` (uint8 ``[..., 3]``) shows the shape's colour."""
    return np.abs(frame.astype(float) - np.asarray(PALETTE[colour], float)).sum(-1) < 60


def _centroid(frame: np.ndarray, colour: str) -> tuple[float, float]:
    ys, xs = np.nonzero(_pixels(frame, colour))
    return float(xs.mean()), float(ys.mean())


def test_whole_photo_centred_paths_and_travel():
    """The text-to-video corpus' settings: the same background for a photo in every clip, a path whose
    midpoint is the frame's centre, the travel drawn in its range; the other draws of a clip do not change."""
    clips = {}
    for crop, path in (("random", "random"), ("whole", "centred")):
        for i, direction in enumerate(("left", "down")):
            clips[crop, direction] = render_clip("red", "square", direction, "chelsea", size=64, frames=9,
                                                 rng=np.random.default_rng(i), background_crop=crop, path=path,
                                                 travel=(0.5, 0.58))
    left, down = clips["whole", "left"], clips["whole", "down"]
    corner = (slice(0, 6), slice(0, 6))  # no path reaches the corners: background only
    assert np.array_equal(left[0][corner], down[0][corner])
    assert not np.array_equal(clips["random", "left"][0][corner], clips["random", "down"][0][corner])
    for frames, axis, sign in ((left, 0, -1), (down, 1, 1)):
        first, last = _centroid(frames[0], "red"), _centroid(frames[-1], "red")
        mid = [(a + b) / 2 for a, b in zip(first, last)]
        assert abs(mid[0] - 31.5) < 1.0 and abs(mid[1] - 31.5) < 1.0, mid
        assert 0.5 * 64 - 1 <= sign * (last[axis] - first[axis]) <= 0.58 * 64 + 1
    # the shape's size is drawn as before: only the crop and the path changed
    area = lambda f: int(_pixels(f, "red").sum())  # noqa: E731
    assert abs(area(clips["random", "left"][4]) - area(left[4])) <= 0.1 * area(left[4])
    with pytest.raises(ConfigError):
        validate(CorpusConfig, {"travel": [0.5, 0.9]}, source="t")


def test_radius_sets_the_shape_size_and_bounds_the_travel():
    """``radius`` scales the shape (area ~ radius squared) and the longest travel allowed shrinks with it, so
    the path of the largest shape stays in the frame; the default draws the same clip as before."""
    red = lambda f: int(_pixels(f, "red").sum())  # noqa: E731
    kw = dict(size=64, frames=5, background_crop="whole", path="centred")
    small = render_clip("red", "circle", "left", "chelsea", rng=np.random.default_rng(0), **kw)
    default = render_clip("red", "circle", "left", "chelsea", rng=np.random.default_rng(0), radius=(0.12, 0.16), **kw)
    big = render_clip("red", "circle", "left", "chelsea", rng=np.random.default_rng(0), radius=(0.24, 0.32),
                      travel=(0.1, 0.16), **kw)
    assert np.array_equal(small, default)
    assert 3.0 < red(big[2]) / red(small[2]) < 5.0, (red(big[2]), red(small[2]))
    for frame in big:  # the whole shape in the frame: no red on the border
        assert red(frame[[0, -1]]) == 0 and red(frame[:, [0, -1]]) == 0
    validate(CorpusConfig, {"radius": [0.22, 0.25], "travel": [0.32, 0.35]}, source="t")
    for bad in ({"radius": [0.22, 0.25]},  # the default travel (up to 0.45) would leave the frame
                {"radius": [0.3, 0.2]}, {"radius": [0.0, 0.1]}):
        with pytest.raises(ConfigError, match="radius|travel"):
            validate(CorpusConfig, bad, source="t")
    # corpus.json records a command that makes the same corpus
    cfg = CorpusConfig(radius=(0.22, 0.25), travel=(0.32, 0.35))
    assert _cli_args(cfg) == ["--travel", "0.32,0.35", "--radius", "0.22,0.25"]
