"""`aiprod audio encode/decode` and the `audio-encode` / `audio-decode` pipeline kinds."""

import soundfile as sf
import torch
from click.testing import CliRunner
from safetensors import safe_open

from aiprod_audio.data import load_audio
from aiprod_audio.model import NACCodec
from aiprod_audio.presets import PRESETS
from aiprod_core.cli import build_cli
from aiprod_core.pipeline import run_document


def _run(*args):
    return CliRunner().invoke(build_cli(), list(map(str, args)), catch_exceptions=False)


def _codec_folder(tmp_path):
    torch.manual_seed(0)
    return NACCodec(**PRESETS["tiny"]).save_pretrained(tmp_path / "codec")


def test_encode_decode_roundtrip(speech_dir, tmp_path):
    folder = _codec_folder(tmp_path)
    wav = speech_dir / "utt0.wav"
    res = _run(
        "audio",
        "encode",
        wav,
        "-o",
        tmp_path / "codes.safetensors",
        "--bandwidth",
        "15",
        "--weights",
        folder,
        "--device",
        "cpu",
    )
    assert res.exit_code == 0, res.output
    with safe_open(str(tmp_path / "codes.safetensors"), framework="pt") as f:
        codes, meta = f.get_tensor("codes"), f.metadata()
    n = load_audio(wav, 24000).shape[0]
    assert codes.shape == (1, 2, -(-n // 32))  # 15 kbps at 750 Hz x 10 bits -> 2 codebooks
    assert meta["num_samples"] == str(n) and meta["weights"] == str(folder.resolve())
    res = _run("audio", "decode", tmp_path / "codes.safetensors", "-o", tmp_path / "out.wav", "--device", "cpu")
    assert res.exit_code == 0, res.output
    info = sf.info(str(tmp_path / "out.wav"))
    assert (info.samplerate, info.frames) == (24000, n)
    # same result as the Python API
    codec = NACCodec.from_pretrained(folder)
    with torch.no_grad():
        assert torch.equal(codec.encode(load_audio(wav, 24000)[None, None], 2), codes)


def test_errors_are_one_line_exit_2(speech_dir, tmp_path):
    res = _run("audio", "encode", tmp_path / "missing.wav", "-o", tmp_path / "c.safetensors", "--preset", "tiny")
    assert res.exit_code == 2 and "missing.wav: file not found" in res.output
    res = _run("audio", "encode", speech_dir / "utt0.wav", "-o", tmp_path / "c.safetensors")
    assert res.exit_code == 2 and "--weights" in res.output
    (tmp_path / "junk.safetensors").write_bytes(b"not safetensors")
    res = _run("audio", "decode", tmp_path / "junk.safetensors", "-o", tmp_path / "o.wav")
    assert res.exit_code == 2 and "junk.safetensors: not a readable safetensors file" in res.output
    assert len(res.output.strip().splitlines()) == 1
    (tmp_path / "exists.safetensors").write_text("x")
    res = _run("audio", "encode", speech_dir / "utt0.wav", "-o", tmp_path / "exists.safetensors", "--preset", "tiny")
    assert res.exit_code == 2 and "--overwrite" in res.output


def test_pipeline_kinds(speech_dir, tmp_path):
    folder = _codec_folder(tmp_path)
    enc = tmp_path / "enc.yaml"
    enc.write_text(
        f"pipeline: audio-encode\ncodec: {{name: nac-rvq, weights: {folder}}}\n"
        f"input: {speech_dir / 'utt1.wav'}\noutput: {tmp_path / 'c.safetensors'}\nbandwidth: 60\n"
    )
    dec = tmp_path / "dec.yaml"
    dec.write_text(
        f"pipeline: audio-decode\ncodec: {{name: nac-rvq, weights: {folder}}}\n"
        f"input: {tmp_path / 'c.safetensors'}\noutput: {tmp_path / 'o.wav'}\n"
    )
    assert run_document(enc, device="cpu", dtype="float32", quiet=True)["num_codebooks"] == 8
    run_document(dec, device="cpu", dtype="float32", quiet=True)
    assert sf.info(str(tmp_path / "o.wav")).frames == load_audio(speech_dir / "utt1.wav", 24000).shape[0]


def test_codes_from_before_a_new_defaulted_config_field_still_decode(speech_dir, tmp_path):
    """Codes store the codec's config; a field added later with its default (depthwise_residual) must not make
    them undecodable with the same codec, while a config that really differs is still refused by name."""
    import json

    from safetensors.torch import save_file

    folder = _codec_folder(tmp_path)
    codes_path = tmp_path / "codes.safetensors"
    res = _run("audio", "encode", speech_dir / "utt0.wav", "-o", codes_path, "--bandwidth", "15", "--weights", folder,
               "--device", "cpu")
    assert res.exit_code == 0, res.output
    with safe_open(str(codes_path), framework="pt") as f:
        codes, meta = f.get_tensor("codes"), f.metadata()
    config = json.loads(meta["config"])
    assert config.pop("depthwise_residual") is False  # as a file written before the field existed
    old = tmp_path / "old.safetensors"
    save_file({"codes": codes}, str(old), metadata={**meta, "config": json.dumps(config)})
    res = _run("audio", "decode", old, "-o", tmp_path / "old.wav", "--device", "cpu")
    assert res.exit_code == 0, res.output
    other = tmp_path / "other.safetensors"
    save_file({"codes": codes}, str(other), metadata={**meta, "config": json.dumps({**config, "kernel_size": config["kernel_size"] + 2})})
    res = _run("audio", "decode", other, "-o", tmp_path / "other.wav", "--device", "cpu")
    assert res.exit_code == 2 and "different config" in res.output and "kernel_size" in res.output, res.output
