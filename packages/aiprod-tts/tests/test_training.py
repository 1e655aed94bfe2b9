"""Training on a generated espeak-ng corpus through the core Trainer, with the shipped tiny configs."""

import json
from pathlib import Path

import pytest
import torch

from aiprod_core.pipeline import load_document
from aiprod_tts.data import collate_acoustic, load_ljspeech
from aiprod_tts.synthesizer import FastSpeech2HiFiGAN
from aiprod_tts.train import make_task, train

ROOT = Path(__file__).resolve().parents[3]
TINY = ROOT / "configs/train/tiny/tts.yaml"
TINY_VOC = ROOT / "configs/train/tiny/tts_vocoder.yaml"


def config(path, corpus, cache, out, *extra):
    _, _, cfg = load_document(path, [f"data.root={corpus}", f"data.cache_dir={cache}", f"train.output_dir={out}",
                                     *extra])
    return cfg


@pytest.fixture(scope="module")
def trained(corpus, feature_cache, tmp_path_factory):
    out = tmp_path_factory.mktemp("acoustic")
    metrics = train(config(TINY, corpus, feature_cache, out))
    return out, metrics


def test_corpus_layout(corpus):
    utts = load_ljspeech(corpus)
    assert len(utts) == 8 and all(u.wav.is_file() for u in utts)


def test_acoustic_mel_loss_falls(trained):
    out, metrics = trained
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    mel = [r["mel_loss"] for r in rows if "mel_loss" in r]
    assert len(mel) >= 5 and mel[-1] < 0.6 * mel[0], mel
    assert all(r["durations_match"] == 1.0 for r in rows if "durations_match" in r)
    assert (out / "final/tts/config.json").is_file() and metrics["step"] == 24


def test_aligner_durations_sum_to_frames(trained, corpus, feature_cache):
    out, _ = trained
    model = FastSpeech2HiFiGAN.from_pretrained(out / "final/tts")
    # corpus statistics were stored with the model
    assert model.cfg.audio.pitch_std != 0.25 and model.cfg.audio.energy_mean != 0.0
    task = make_task(config(TINY, corpus, feature_cache, out / "probe"))
    batch = collate_acoustic([task.data.item(i) for i in range(len(task.data))], model.cfg.audio)
    with torch.no_grad():
        o = model.acoustic(batch["tokens"], batch["token_lens"], batch["mels"], batch["mel_lens"], batch["pitch"],
                           batch["voiced"], batch["energy"])
    assert torch.equal(o.durations.sum(-1), batch["mel_lens"])
    assert torch.all((o.durations >= 1) | (torch.arange(o.durations.shape[1]) >= batch["token_lens"][:, None]))
    # the trained voice speaks through the public API
    wav = model.synthesize("The pilot found a key.")
    assert wav.numel() > 0 and torch.isfinite(wav).all()


def test_resume_equals_uninterrupted(corpus, feature_cache, tmp_path):
    extra = ["train.max_steps=4", "train.checkpoint_every=2", "train.log_every=1"]
    full = train(config(TINY, corpus, feature_cache, tmp_path / "a", *extra))
    partial = train(config(TINY, corpus, feature_cache, tmp_path / "b", *extra), stop_after=2)
    assert partial["stopped"] and partial["step"] == 2
    resumed = train(config(TINY, corpus, feature_cache, tmp_path / "b", *extra))
    assert resumed["loss"] == full["loss"]
    a = FastSpeech2HiFiGAN.from_pretrained(tmp_path / "a/final/tts").state_dict()
    b = FastSpeech2HiFiGAN.from_pretrained(tmp_path / "b/final/tts").state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    lines = (tmp_path / "b/metrics.jsonl").read_text().splitlines()
    assert [json.loads(x)["step"] for x in lines if "loss" in json.loads(x)] == [1, 2, 3, 4]


def test_vocoder_stage_from_acoustic(trained, corpus, feature_cache, tmp_path):
    acoustic, _ = trained
    cfg = config(TINY_VOC, corpus, feature_cache, tmp_path / "voc", f"model.init_from={acoustic / 'final/tts'}",
                 "vocoder.finetune_on_predicted=true", "train.max_steps=2")
    metrics = train(cfg)
    assert metrics["step"] == 2 and all(torch.isfinite(torch.tensor(metrics[k]))
                                        for k in ("mel_loss", "adv_loss", "fm_loss", "disc_loss"))
    voice = FastSpeech2HiFiGAN.from_pretrained(tmp_path / "voc/final/tts")
    before = FastSpeech2HiFiGAN.from_pretrained(acoustic / "final/tts")
    sa, sb = voice.state_dict(), before.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa if k.startswith("acoustic."))  # acoustic frozen
    assert any(not torch.equal(sa[k], sb[k]) for k in sa if k.startswith("vocoder."))  # vocoder trained
    assert not any(k.startswith("disc") for k in sa)  # discriminators are training-only


ISTFT_VOCODER = {"upsample_initial_channel": 32, "upsample_rates": [8, 8], "upsample_kernel_sizes": [16, 16],
                 "resblock_kernel_sizes": [3], "resblock_dilations": [[1, 3]], "istft": {"n_fft": 16, "hop": 4}}


def test_vocoder_stage_retrains_a_voice_in_another_vocoder_layout(trained, corpus, feature_cache, tmp_path):
    """init_from + a vocoder section unlike the folder's: the acoustic model is kept, the vocoder is a new one in
    that layout (here iSTFTNet's head, issue 21), trained by the vocoder stage; not allowed in the acoustic stage."""
    from aiprod_core.errors import AiprodError

    acoustic, _ = trained
    cfg = config(TINY_VOC, corpus, feature_cache, tmp_path / "voc", f"model.init_from={acoustic / 'final/tts'}",
                 "train.max_steps=2")
    cfg = cfg.model_copy(update={"model": cfg.model.model_copy(update={"config": {"vocoder": ISTFT_VOCODER}})})
    metrics = train(cfg)
    assert metrics["step"] == 2 and all(torch.isfinite(torch.tensor(metrics[k])) for k in ("mel_loss", "disc_loss"))
    voice = FastSpeech2HiFiGAN.from_pretrained(tmp_path / "voc/final/tts")
    before = FastSpeech2HiFiGAN.from_pretrained(acoustic / "final/tts")
    assert voice.cfg.vocoder.istft is not None and before.cfg.vocoder.istft is None
    assert voice.vocoder.conv_post.parametrizations.weight.original1.shape[0] == 18  # 9 magnitudes + 9 phases
    sa, sb = voice.state_dict(), before.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa if k.startswith("acoustic."))
    wav = voice.synthesize("The pilot found a key.")
    assert wav.numel() > 0 and torch.isfinite(wav).all() and wav.abs().max() <= 1
    bad = config(TINY, corpus, feature_cache, tmp_path / "ac", f"model.init_from={acoustic / 'final/tts'}")
    bad = bad.model_copy(update={"model": bad.model.model_copy(update={"config": {"vocoder": ISTFT_VOCODER}})})
    with pytest.raises(AiprodError, match="model.config.vocoder: differs"):
        make_task(bad)
    typo = cfg.model_copy(update={"model": cfg.model.model_copy(update={"config": {"vocoder": {"istfft": {}}}})})
    with pytest.raises(AiprodError, match="model.config.vocoder: istfft: unknown key"):
        make_task(typo)


def test_external_durations_replace_the_aligner(corpus, feature_cache, tmp_path):
    probe = make_task(config(TINY, corpus, feature_cache, tmp_path / "probe"))
    durs = tmp_path / "durations"
    durs.mkdir()
    for u in probe.data.utterances:  # frames spread evenly, remainder on the last token
        it = probe.data.item_of(u)
        n, t = it["tokens"].numel(), it["mel"].shape[-1]
        d = [t // n] * n
        d[-1] += t - sum(d)
        (durs / f"{u.id}.txt").write_text(" ".join(map(str, d)))
    task = make_task(config(TINY, corpus, feature_cache, tmp_path / "ext", f"data.durations_dir={durs}"))
    batch = task.make_batch(0, torch.Generator().manual_seed(0))
    out = task.model.acoustic(batch["tokens"], batch["token_lens"], batch["mels"], batch["mel_lens"], batch["pitch"],
                              batch["voiced"], batch["energy"], durations=batch["durations"])
    assert torch.equal(out.durations, batch["durations"])
    assert torch.isfinite(task.losses(task.model, batch, 0)["loss"])


@pytest.mark.parametrize("path", sorted((ROOT / "configs/train").rglob("tts*.yaml")), ids=lambda p: p.name)
def test_shipped_configs_validate(path):
    what, spec, cfg = load_document(path)
    assert what == "recipe" and spec.name == "tts"
    assert path.read_text().startswith("# aiprod train configs/train/")
