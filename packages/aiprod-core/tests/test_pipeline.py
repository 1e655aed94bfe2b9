"""Per-pipeline checks that `validate` must make so that `run` does not fail late (issue 19).

The pipelines live in their own packages; these tests run where those are installed.
"""

import pytest
from pydantic import ValidationError

from aiprod_core.checks import check_path, host_memory, walk_paths
from aiprod_core.config import StrictModel

REF = {"name": "x", "preset": "tiny"}


def _t2v(**kw):
    t2v = pytest.importorskip("aiprod_pipelines.text_to_video")
    doc = {"prompt": "a red circle", "output": "o.mp4", "text_encoder": REF, "denoiser": REF, "autoencoder": REF,
           "speech": REF, **kw}
    return t2v.TextToVideoConfig.model_validate(doc)


def test_text_to_video_blank_narration_and_two_stage_sizes():
    assert _t2v(narration="Hello.").narration == "Hello."
    for blank in ("", "   ", "..."):
        with pytest.raises(ValidationError, match="narration[\\s\\S]*nothing to speak"):
            _t2v(narration=blank)
    with pytest.raises(ValidationError, match="width: 48 is not a multiple of 32"):
        _t2v(width=48, height=64, two_stage={"upsampler": REF})
    assert _t2v(width=64, height=96, two_stage={"upsampler": REF}).two_stage is not None
    with pytest.raises(ValidationError, match="speech_speed"):
        _t2v(speech_speed=1e-9)


def test_text_to_video_larger_than_memory_is_refused():
    if not host_memory():
        pytest.skip("memory size unknown here")
    with pytest.raises(ValidationError, match="needs at least .* of memory"):
        _t2v(width=1 << 16, height=1 << 16, frames=4097)


def test_tts_needs_something_to_speak():
    tts = pytest.importorskip("aiprod_tts.pipeline")
    base = {"synthesizer": REF, "output": "o.wav"}
    assert tts.TTSPipelineConfig.model_validate({**base, "text": "Hi"}).text == "Hi"
    for bad, expect in (({}, "exactly one of 'text' or 'text_file'"),
                        ({"text": "a", "text_file": "t.txt"}, "exactly one"),
                        ({"text": " ! "}, "nothing to speak"),
                        ({"text": "Hi", "output": "o.mp3"}, "must end in"),
                        ({"text": "Hi", "controls": {"speed": 0}}, "speed")):
        with pytest.raises(ValidationError, match=expect):
            tts.TTSPipelineConfig.model_validate({**base, **bad})


def test_path_roles_follow_names_and_markers(tmp_path):
    from pydantic import Field

    class Data(StrictModel):
        roots: list[str]
        cache_dir: str | None = None  # not a path role: created on demand
        notes: str = Field("n", json_schema_extra={"aiprod_path": "input"})

    class Doc(StrictModel):
        input: str
        output: str
        data: Data
        label: str = "x"

    doc = Doc(input="in.wav", output="o.wav", data=Data(roots=["a", "b"], cache_dir="c"))
    assert sorted(walk_paths(doc)) == [("data.notes", "input", "n"), ("data.roots[0]", "input", "a"),
                                       ("data.roots[1]", "input", "b"), ("input", "input", "in.wav"),
                                       ("output", "output", "o.wav")]
    assert check_path("input", "input", str(tmp_path / "nope"), "d.yaml") == [
        f"d.yaml: input: file or folder {tmp_path / 'nope'} not found"]
    assert check_path("output", "output", "", "d.yaml") == ["d.yaml: output: empty path"]
    assert "File name too long" in check_path("output", "output", "x" * 5000, "d.yaml")[0]
    assert check_path("output", "output", str(tmp_path / "new" / "deeper" / "o.wav"), "d.yaml") == []
