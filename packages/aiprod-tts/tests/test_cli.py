"""`aiprod tts say` and the `tts` pipeline kind, through the real CLI."""

from pathlib import Path

import pytest
import soundfile as sf
from click.testing import CliRunner

from aiprod_core.cli import build_cli

ROOT = Path(__file__).resolve().parents[3]


def invoke(*args, input=None):
    return CliRunner().invoke(build_cli(), list(args), input=input, catch_exceptions=False)


def test_say_writes_24khz_wav(tmp_path):
    out = tmp_path / "hello.wav"
    r = invoke("tts", "say", "Hello world. How are you?", "-o", str(out), "--preset", "tiny", "--speed", "1.2",
               "--pitch-shift", "2")
    assert r.exit_code == 0, r.output
    data, sr = sf.read(out)
    assert sr == 24000 and data.ndim == 1 and len(data) > 0
    assert [p.name for p in tmp_path.iterdir()] == ["hello.wav"]  # atomic: no temp file left
    again = invoke("tts", "say", "Hi", "-o", str(out), "--preset", "tiny")
    assert again.exit_code == 2 and "already exists" in again.output
    assert invoke("tts", "say", "Hi", "-o", str(out), "--preset", "tiny", "--overwrite").exit_code == 0


@pytest.mark.skipif(not (ROOT / "weights" / "tiny" / "tts").is_dir(), reason="no demo voice in this checkout")
def test_say_speaks_with_the_shipped_voice_by_default(tmp_path, monkeypatch):
    from aiprod_tts.cli import default_voice

    monkeypatch.delenv("AIPROD_TTS_VOICE", raising=False)
    monkeypatch.setenv("AIPROD_CACHE_DIR", str(tmp_path / "cache"))
    assert default_voice() == ROOT / "weights" / "tiny" / "tts"
    out = tmp_path / "a.wav"
    r = invoke("tts", "say", "Hi", "-o", str(out))
    assert r.exit_code == 0, r.output
    data, sr = sf.read(out)
    assert sr == 24000 and 0.1 < len(data) / sr < 3


def test_say_errors_are_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("AIPROD_TTS_VOICE", str(tmp_path / "no-voice"))
    r = invoke("tts", "say", "Hi", "-o", str(tmp_path / "x.wav"))
    assert r.exit_code == 2 and "no-voice" in r.output
    r = invoke("tts", "say", "Hi", "-o", str(tmp_path / "x.wav"), "--preset", "tiny", "--weights", str(tmp_path))
    assert r.exit_code == 2 and "at most one of --weights DIR or --preset NAME" in r.output
    r = invoke("tts", "say", "Hi", "-o", str(tmp_path / "x.mp3"), "--preset", "tiny")
    assert r.exit_code == 2 and "'output' must end in .wav" in r.output
    r = invoke("tts", "say", "Hi", "-o", str(tmp_path / "x.wav"), "--weights", str(tmp_path / "missing"))
    assert r.exit_code == 2 and "missing" in r.output


def test_say_from_saved_weights_and_pipeline(tmp_path, tiny):
    folder = tiny.save_pretrained(tmp_path / "voice")
    out = tmp_path / "a.flac"
    r = invoke("tts", "say", "-", "-o", str(out), "--weights", str(folder), input="Good morning.")
    assert r.exit_code == 0, r.output
    direct = tiny.synthesize("Good morning.")
    assert sf.info(out).frames == direct.numel()
    (tmp_path / "speak.txt").write_text("First sentence. Second one!")
    yaml = tmp_path / "tts.yaml"
    yaml.write_text(f"pipeline: tts\nsynthesizer: {{name: fastspeech2-hifigan, weights: {folder}}}\n"
                    f"text_file: {tmp_path / 'speak.txt'}\noutput: {tmp_path / 'p.wav'}\ncontrols: {{speed: 1.5}}\n")
    r = invoke("run", str(yaml), "--device", "cpu")
    assert r.exit_code == 0, r.output
    assert sf.info(tmp_path / "p.wav").samplerate == 24000
    bad = tmp_path / "bad.yaml"
    bad.write_text("pipeline: tts\nsynthesizer: {name: fastspeech2-hifigan, preset: tiny}\noutput: x.wav\n"
                   "controls: {sped: 2}\n")
    r = invoke("run", str(bad))
    assert r.exit_code == 2 and "controls.sped: unknown key" in r.output
