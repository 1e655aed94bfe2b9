"""``aiprod eval COMPONENT DATA``: the quality metric of a component on held-out data, against its floor.

=====================  ==============================  =============================================  ==========
COMPONENT              DATA                            metric                                         floor
=====================  ==============================  =============================================  ==========
video-autoencoder dir  folder of mp4 (video corpus)    PSNR of encode→decode, dB (8-bit frames)       ≥ 30 dB
audio-codec dir        folder of wav/flac              SI-SDR at ``--kbps`` (6), dB                   ≥ 8 dB
speech-synthesizer dir LJSpeech layout (metadata.csv)  log-mel distance to the reference, dB (DTW),    ≤ 0.5 x
                                                       and the same for an untrained build;           untrained
                                                       phoneme error rate of the project's CTC        ≤ 1.5 x
                                                       recogniser, beside the reference's;            reference
                                                       pocketsphinx WER, beside the reference's
text-to-video YAML     video corpus (captions.jsonl)   on held-out prompts: colour-hit rate,          ≥ 0.90
                                                       direction-hit rate,                            ≥ 0.80
                                                       shape-hit rate,                                ≥ 0.70
                                                       photo-hit rate (whole-photo corpora)           reported
=====================  ==============================  =============================================  ==========

A corpus root with a ``heldout/`` folder is evaluated on ``heldout/``. ``--check`` exits with code 1
when a floor is missed; ``--json`` prints one JSON object.

Colour hit (text-to-video): in every decoded frame, the pixels that are saturated and bright (HSV
S ≥ 0.45, V ≥ 0.3) vote for the nearest palette hue within 30°; the clip shows the colour with the
most votes (none if fewer than 0.3 % of the pixels vote). A hit is a clip showing the prompt's colour.
The corpus desaturates its photos, so on the ground-truth clips this measure finds the shape's colour
(the reference rate is printed beside the model's).

Direction hit: the centroid of the prompted colour's largest blob is tracked over the frames; the
least-squares slope of the track along the axis that moves most, over the clip, must be at least 8% of
the frame side, and its sign names the direction (none when the blob stands still or shows in fewer
than half the frames). Shape hit: the median over frames of the blob's fill of its bounding box
(triangle 1/2, circle pi/4, square 1; bounds 0.68 and 0.845, between the ranges measured on the
corpus' own clips). Photo hit, on a corpus made with ``background_crop: whole`` (one picture per photo
word): the clip's median over frames (the moving shape drops out) is nearest, in mean squared difference,
to the prompted photo's background among the corpus' photos. Each rate is printed beside the same measure
on the ground-truth clips (1.00 on the corpus' 256 training and 32 held-out clips; shape 0.94-0.97 on the
text-to-video corpus' held-out sets, whose longer paths bring shapes near the frame's edge).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
import numpy as np

from aiprod_core.errors import AiprodError

#: kind -> the floors its report is checked against: (metric, op, value)
FLOORS: dict[str, list[tuple[str, str, float]]] = {
    "video-autoencoder": [("psnr_db", ">=", 30.0)],
    "audio-codec": [("si_sdr_db", ">=", 8.0)],
    "speech-synthesizer": [("mel_distance_ratio", "<=", 0.5), ("per_ratio", "<=", 1.5)],
    "text-to-video": [("colour_hit_rate", ">=", 0.90), ("direction_hit_rate", ">=", 0.80),
                      ("shape_hit_rate", ">=", 0.70)],
}


# -- metrics ------------------------------------------------------------------------------------------
def psnr(reference: np.ndarray, estimate: np.ndarray, peak: float = 255.0) -> float:
    """Peak signal-to-noise ratio in dB (``inf`` for identical inputs)."""
    err = np.mean((np.asarray(reference, np.float64) - np.asarray(estimate, np.float64)) ** 2)
    return float("inf") if err == 0 else float(10 * math.log10(peak**2 / err))


def si_sdr(reference: np.ndarray, estimate: np.ndarray, eps: float = 1e-12) -> float:
    """Scale-invariant SDR in dB (Le Roux et al. 2019, arXiv:1811.02508), zero-mean signals."""
    ref = np.asarray(reference, np.float64).ravel()
    est = np.asarray(estimate, np.float64).ravel()
    n = min(len(ref), len(est))
    ref, est = ref[:n] - ref[:n].mean(), est[:n] - est[:n].mean()
    target = (np.dot(est, ref) / (np.dot(ref, ref) + eps)) * ref
    noise = est - target
    return float(10 * math.log10((np.dot(target, target) + eps) / (np.dot(noise, noise) + eps)))


def codebooks_for_kbps(kbps: float, frame_rate: float, codebook_size: int, num_codebooks: int) -> int:
    """How many RVQ codebooks fit in ``kbps`` (each costs ``frame_rate * log2(size)`` bit/s)."""
    per = frame_rate * math.log2(codebook_size) / 1000.0
    n = int(math.floor(kbps / per + 1e-9))
    if n < 1:
        raise AiprodError(f"--kbps {kbps:g}: below one codebook of this codec ({per:g} kbps at {frame_rate:g} Hz "
                          f"x {math.log2(codebook_size):g} bits); pass --kbps {per:g} or more")
    return min(num_codebooks, n)


def log_mel_db(wav: np.ndarray, sample_rate: int, n_mels: int = 80, n_fft: int = 1024, hop: int = 256,
               top_db: float = 80.0) -> np.ndarray:
    """Log-mel power spectrogram ``[frames, n_mels]`` in dB, floored ``top_db`` below its peak."""
    import torch
    import torchaudio

    mel = torchaudio.transforms.MelSpectrogram(sample_rate=sample_rate, n_fft=n_fft, hop_length=hop,
                                               n_mels=n_mels, f_max=sample_rate / 2, power=2.0)
    x = torch.as_tensor(np.asarray(wav, np.float32))
    if len(x) < n_fft:  # a (near-)silent synthesis can be shorter than one window
        x = torch.nn.functional.pad(x, (0, n_fft - len(x)))
    spec = mel(x).clamp_min(1e-10)
    db = 10 * torch.log10(spec)
    db = torch.maximum(db, db.max() - top_db)
    return db.T.numpy().astype(np.float64)


def dtw_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Mean frame distance (L1 per bin, averaged over bins) along the best monotone alignment of ``a`` and ``b``."""
    n, m = len(a), len(b)
    if n == 0 or m == 0:
        return float("inf")
    cost = np.abs(a[:, None, :] - b[None, :, :]).mean(-1)  # [n, m]
    acc = np.full((n + 1, m + 1), np.inf)
    steps = np.zeros((n + 1, m + 1))
    acc[0, 0] = 0.0
    for i in range(1, n + 1):
        ci = cost[i - 1]
        for j in range(1, m + 1):
            k = min((acc[i - 1, j - 1], 0), (acc[i - 1, j], 1), (acc[i, j - 1], 2))[1]
            pi, pj = ((i - 1, j - 1), (i - 1, j), (i, j - 1))[k]
            acc[i, j] = acc[pi, pj] + ci[j - 1]
            steps[i, j] = steps[pi, pj] + 1
    return float(acc[n, m] / steps[n, m])


def mel_distance(reference: np.ndarray, estimate: np.ndarray, sample_rate: int) -> float:
    """Log-mel distance in dB between two utterances of the same text (DTW-aligned, so timing is free)."""
    return dtw_distance(log_mel_db(reference, sample_rate), log_mel_db(estimate, sample_rate))


def colour_votes(frames: np.ndarray, colours: list[str] | None = None, *, min_saturation: float = 0.45,
                 min_value: float = 0.3, max_hue_deg: float = 30.0) -> dict[str, float]:
    """Fraction of the pixels of ``uint8 [T, H, W, 3]`` frames that vote for each palette colour."""
    from skimage.color import rgb2hsv

    from aiprod_pipelines.corpus import PALETTE

    colours = colours or list(PALETTE)
    hsv = rgb2hsv(np.asarray(frames).reshape(-1, 1, 3)).reshape(-1, 3)
    ok = (hsv[:, 1] >= min_saturation) & (hsv[:, 2] >= min_value)
    hue = hsv[ok, 0] * 360.0
    centres = np.array([rgb2hsv(np.array([[PALETTE[c]]], np.uint8))[0, 0, 0] * 360.0 for c in colours])
    d = np.abs(hue[:, None] - centres[None, :])
    d = np.minimum(d, 360.0 - d)
    nearest = d.argmin(1)
    near = d[np.arange(len(hue)), nearest] <= max_hue_deg
    total = max(hsv.shape[0], 1)
    return {c: float(np.sum(near & (nearest == i)) / total) for i, c in enumerate(colours)}


def shown_colour(frames: np.ndarray, colours: list[str] | None = None, min_fraction: float = 0.003) -> str | None:
    """The palette colour a clip shows (most votes), or None when no colour reaches ``min_fraction``."""
    votes = colour_votes(frames, colours)
    best = max(votes, key=votes.get)
    return best if votes[best] >= min_fraction else None


def colour_mask(frames: np.ndarray, colour: str, *, min_saturation: float = 0.45, min_value: float = 0.3,
                max_hue_deg: float = 30.0) -> np.ndarray:
    """``bool [T, H, W]``: the pixels of ``uint8 [T, H, W, 3]`` frames that vote for ``colour`` (as
    :func:`colour_votes` counts them: saturated, bright, nearest palette hue within ``max_hue_deg``)."""
    from skimage.color import rgb2hsv

    from aiprod_pipelines.corpus import PALETTE

    frames = np.asarray(frames)
    hsv = rgb2hsv(frames.reshape(-1, 1, 3)).reshape(frames.shape[:-1] + (3,))
    centres = np.array([rgb2hsv(np.array([[rgb]], np.uint8))[0, 0, 0] * 360.0 for rgb in PALETTE.values()])
    d = np.abs(hsv[..., 0:1] * 360.0 - centres)
    d = np.minimum(d, 360.0 - d)
    target = list(PALETTE).index(colour)
    ok = (hsv[..., 1] >= min_saturation) & (hsv[..., 2] >= min_value)
    return ok & (d.argmin(-1) == target) & (d[..., target] <= max_hue_deg)


def _largest_blob(mask: np.ndarray) -> np.ndarray:
    """The largest 8-connected component of a ``bool [H, W]`` mask (stray pixels elsewhere are noise)."""
    from skimage.measure import label

    lab = label(mask, connectivity=2)
    if lab.max() == 0:
        return mask
    sizes = np.bincount(lab.ravel())
    sizes[0] = 0
    return lab == sizes.argmax()


def colour_track(frames: np.ndarray, colour: str, min_pixels: int = 6) -> list[tuple[float, float] | None]:
    """Per frame, the centroid (y, x) of the largest blob of ``colour``, or None where it has < ``min_pixels``."""
    out: list[tuple[float, float] | None] = []
    for m in colour_mask(frames, colour):
        blob = _largest_blob(m)
        if blob.sum() < min_pixels:
            out.append(None)
            continue
        ys, xs = np.nonzero(blob)
        out.append((float(ys.mean()), float(xs.mean())))
    return out


def shown_direction(frames: np.ndarray, colour: str, min_travel: float = 0.08) -> str | None:
    """Which way the ``colour`` blob moves: the least-squares slope of its centroid track over time along the
    axis that moves most, if the fitted travel over the clip is at least ``min_travel`` of the frame side;
    None when it stands still, shows in fewer than half the frames, or is absent."""
    frames = np.asarray(frames)
    track = colour_track(frames, colour)
    t = np.array([i for i, c in enumerate(track) if c is not None], np.float64)
    if len(t) < max(3, len(track) // 2):
        return None
    yx = np.array([c for c in track if c is not None], np.float64)
    tc = t - t.mean()
    slope = (tc[:, None] * (yx - yx.mean(0))).sum(0) / max((tc**2).sum(), 1e-9)  # px per frame, (dy, dx)
    travel = slope * (len(track) - 1)
    axis = int(np.abs(travel).argmax())
    if abs(travel[axis]) < min_travel * frames.shape[1 + axis]:
        return None
    if axis == 1:
        return "right" if travel[1] > 0 else "left"
    return "down" if travel[0] > 0 else "up"


#: fill of the bounding box by each corpus shape (ideal: triangle 1/2, circle pi/4, square 1), read as the
#: shape whose range holds it. Measured on the corpus' own 256 training clips (antialiased, 4:2:0 chroma):
#: triangles 0.52-0.63, circles 0.74-0.83, squares 0.87-1.0; the bounds sit between those ranges.
SHAPE_FILL_BOUNDS = (("triangle", 0.68), ("circle", 0.845), ("square", math.inf))


def shape_fill(frames: np.ndarray, colour: str, min_pixels: int = 12) -> float | None:
    """The median over frames of the ``colour`` blob's fill of its bounding box (its largest blob's area / box
    area: about 0.5 for a triangle, 0.79 for a circle, 1 for a square); None when it shows in under half of them."""
    fills = []
    for m in colour_mask(frames, colour):
        blob = _largest_blob(m)
        if blob.sum() < min_pixels:
            continue
        ys, xs = np.nonzero(blob)
        box = (ys.max() - ys.min() + 1) * (xs.max() - xs.min() + 1)
        fills.append(blob.sum() / box)
    if len(fills) < max(1, len(frames) // 2):
        return None
    return float(np.median(fills))


def shown_shape(frames: np.ndarray, colour: str, min_pixels: int = 12) -> str | None:
    """Which shape the ``colour`` blob has: its :func:`shape_fill` matched to :data:`SHAPE_FILL_BOUNDS`; None
    when absent."""
    return shown_shape_of_fill(shape_fill(frames, colour, min_pixels))


def shown_shape_of_fill(fill: float | None) -> str | None:
    """The shape whose range of :data:`SHAPE_FILL_BOUNDS` holds ``fill`` (None for None)."""
    return None if fill is None else next(shape for shape, upper in SHAPE_FILL_BOUNDS if fill < upper)


def shown_photo(frames: np.ndarray, backgrounds: dict[str, np.ndarray]) -> str:
    """Which of ``backgrounds`` (name -> float ``[H, W, 3]`` in [0, 1]) the clip's median frame is nearest to."""
    median = np.median(np.asarray(frames, np.float32) / 255.0, axis=0)
    return min(backgrounds, key=lambda name: float(np.square(backgrounds[name] - median).mean()))


def _photo_backgrounds(folder: Path, width: int, height: int) -> dict[str, np.ndarray] | None:
    """The corpus' photo backgrounds when it shows each photo whole (``corpus.json`` beside ``folder`` or in it)
    at the clips' size; None otherwise (random crops: no one picture per photo word)."""
    from aiprod_pipelines.corpus import whole_background

    meta = next((f for f in (folder / "corpus.json", folder.parent / "corpus.json") if f.is_file()), None)
    if meta is None:
        return None
    cfg = json.loads(meta.read_text(encoding="utf-8")).get("config", {})
    if cfg.get("background_crop") != "whole" or not cfg.get("photos") or not cfg.get("size") == width == height:
        return None
    return {p: whole_background(p, width, cfg.get("background_saturation", 0.25)) for p in cfg["photos"]}


# -- data -----------------------------------------------------------------------------------------------
def _split_folder(data: Path) -> Path:
    if not data.is_dir():
        raise AiprodError(f"{data}: data folder not found")
    return data / "heldout" if (data / "heldout").is_dir() else data


def _media_files(folder: Path, suffixes: tuple[str, ...]) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in suffixes and not p.name.startswith("."))


# -- evaluators -----------------------------------------------------------------------------------------
def eval_video_autoencoder(model: Any, data: Path, *, limit: int = 32, frames: int = 17,
                           progress: Callable | None = None) -> dict[str, Any]:
    """PSNR (dB) of 8-bit frames after encode → decode, averaged over clips (first ``frames`` frames each)."""
    import torch

    from aiprod_pipelines.media import frames_to_video, read_mp4, video_to_frames

    folder = _split_folder(data)
    files = _media_files(folder, (".mp4", ".mov", ".mkv", ".webm"))[:limit]
    if not files:
        raise AiprodError(f"{folder}: no video files (.mp4, .mov, .mkv, .webm)")
    p = next(model.parameters())
    tc, sc = model.temporal_compression, model.spatial_compression
    scores = []
    for f in progress(files, desc="psnr", unit="clip") if progress else files:
        clip = read_mp4(f, audio=False, max_frames=frames).frames
        t = 1 + (min(len(clip), frames) - 1) // tc * tc
        h, w = clip.shape[1] // sc * sc, clip.shape[2] // sc * sc
        if h == 0 or w == 0:
            raise AiprodError(f"{f}: frames {clip.shape[2]}x{clip.shape[1]} are smaller than {sc} pixels")
        y0, x0 = (clip.shape[1] - h) // 2, (clip.shape[2] - w) // 2
        ref = np.ascontiguousarray(clip[:t, y0:y0 + h, x0:x0 + w])
        video = torch.from_numpy(frames_to_video(ref))[None].to(p.device, p.dtype)
        with torch.no_grad():
            out = model.decode(model.encode(video))
        scores.append(psnr(ref, video_to_frames(out[0].float().clamp(-1, 1))))
    return {"psnr_db": float(np.mean(scores)), "psnr_min_db": float(np.min(scores)), "clips": len(scores),
            "data": str(folder)}


def eval_audio_codec(model: Any, data: Path, *, kbps: float = 6.0, limit: int = 32,
                     progress: Callable | None = None) -> dict[str, Any]:
    """SI-SDR (dB) of encode → decode with as many codebooks as ``kbps`` allows."""
    import torch
    import torchaudio

    from aiprod_pipelines.media import read_wav

    folder = _split_folder(data)
    files = _media_files(folder, (".wav", ".flac"))[:limit]
    if not files:
        raise AiprodError(f"{folder}: no audio files (.wav, .flac)")
    q = codebooks_for_kbps(kbps, model.frame_rate, model.codebook_size, model.num_codebooks)
    p = next(model.parameters())
    scores = []
    for f in progress(files, desc="si-sdr", unit="file") if progress else files:
        wav, sr = read_wav(f)
        x = torch.from_numpy(wav)
        if sr != model.sample_rate:
            x = torchaudio.functional.resample(x, sr, model.sample_rate)
        with torch.no_grad():
            y = model.decode(model.encode(x.view(1, 1, -1).to(p.device, p.dtype), num_codebooks=q))
        scores.append(si_sdr(x.numpy(), y.float().cpu().numpy().ravel()))
    bitrate = q * model.frame_rate * math.log2(model.codebook_size) / 1000.0
    return {"si_sdr_db": float(np.mean(scores)), "si_sdr_min_db": float(np.min(scores)), "codebooks": q,
            "bitrate_kbps": bitrate, "files": len(scores), "data": str(folder)}


def read_metadata(folder: Path) -> list[tuple[str, str, Path, str]]:
    """(id, text, wav path, normalized text) of an LJSpeech-layout corpus: ``metadata.csv``
    (``id|text|normalized``, the last column optional) + ``wavs/``."""
    meta = folder / "metadata.csv"
    if not meta.is_file():
        raise AiprodError(f"{meta}: not found (an LJSpeech-layout folder holds metadata.csv + wavs/)")
    out = []
    for n, line in enumerate(meta.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split("|")
        if len(parts) < 2:
            raise AiprodError(f"{meta}:{n}: expected 'id|text|normalized text'")
        wav = folder / "wavs" / f"{parts[0]}.wav"
        if not wav.is_file():
            raise AiprodError(f"{meta}:{n}: {wav} not found")
        out.append((parts[0], parts[1], wav, parts[2] if len(parts) > 2 and parts[2].strip() else parts[1]))
    return out


def word_error_rate(reference: list[str], hypothesis: list[str]) -> tuple[int, int]:
    """(substitutions + deletions + insertions, reference words): word-level Levenshtein distance."""
    prev = list(range(len(hypothesis) + 1))
    for i, r in enumerate(reference, 1):
        cur = [i] + [0] * len(hypothesis)
        for j, h in enumerate(hypothesis, 1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (r != h))
        prev = cur
    return prev[-1], len(reference)


def asr_words(text: str) -> list[str]:
    """Lower-case words, punctuation dropped, hyphens split ("eighty-four" -> "eighty four")."""
    import re

    return re.findall(r"[a-z']+", text.lower().replace("-", " "))


class OfflineASR:
    """pocketsphinx with the US-English acoustic model, dictionary and language model its wheel ships
    (no download). It is a small generic recogniser, so the espeak-ng reference recordings have a
    high WER of their own: the synthesized speech's WER is read next to the reference's."""

    rate = 16000

    def __init__(self) -> None:
        try:
            from pocketsphinx import Decoder
        except ImportError:
            raise AiprodError("the word error rate needs pocketsphinx (pip install 'aiprod-pipelines[asr]'); "
                              "pass --no-asr to skip it") from None
        self.decoder = Decoder(samprate=self.rate, loglevel="FATAL")

    def __call__(self, wav: np.ndarray, sample_rate: int) -> list[str]:
        import torch
        import torchaudio

        x = torchaudio.functional.resample(torch.as_tensor(wav, dtype=torch.float32), sample_rate, self.rate)
        pcm = (x.clamp(-1, 1) * 32767).to(torch.int16).numpy().tobytes()
        self.decoder.start_utt()
        self.decoder.process_raw(pcm, full_utt=True)
        self.decoder.end_utt()
        hyp = self.decoder.hyp()
        return asr_words(hyp.hypstr) if hyp is not None else []


def eval_speech(model: Any, data: Path, *, limit: int = 32, baseline: Any | None = None, asr: bool = True,
                progress: Callable | None = None, recogniser: Any | None = None) -> dict[str, Any]:
    """Log-mel distance (dB, DTW-aligned) of synthesized speech to the reference recordings, the
    word error rate of an offline recogniser on both, and with ``recogniser`` (an aiprod_tts
    PhonemeRecogniser) the phoneme error rate of each against the phones of the text (the voice's frontend)."""
    import torch
    import torchaudio

    from aiprod_pipelines.media import read_wav

    folder = _split_folder(data)
    items = read_metadata(folder)[:limit]
    if not items:
        raise AiprodError(f"{folder / 'metadata.csv'}: no utterance")
    recognise = OfflineASR() if asr else None
    sr = int(model.sample_rate)
    dist, base = [], []
    errors = {"synth": [0, 0], "reference": [0, 0]}
    phone_errors = {"synth": [0, 0], "reference": [0, 0], "untrained": [0, 0]}
    if recogniser is not None:
        from aiprod_tts.recogniser import phoneme_errors, text_phones

        g2p = getattr(getattr(model, "frontend", None), "g2p_weights", None)
        phones = dict(zip([it[0] for it in items], text_phones([it[3] for it in items], g2p)))
    for _uid, text, path, spoken in progress(items, desc="speech", unit="utt") if progress else items:
        ref, ref_sr = read_wav(path)
        with torch.no_grad():
            synth = model.synthesize(text).float().cpu().numpy()
            if baseline is not None:
                untrained = baseline.synthesize(text).float().cpu().numpy()
        if recognise is not None:
            words = asr_words(spoken)  # the normalized column: numbers as the words spoken
            for key, (wav, rate) in {"synth": (synth, sr), "reference": (ref, ref_sr)}.items():
                e, n = word_error_rate(words, recognise(wav, rate))
                errors[key][0] += e
                errors[key][1] += n
        if recogniser is not None:
            heard = {"synth": (synth, sr), "reference": (ref, ref_sr)}
            if baseline is not None:
                heard["untrained"] = (untrained, sr)
            for key, (wav, rate) in heard.items():
                e, n = phoneme_errors(phones[_uid], recogniser.recognise([torch.from_numpy(wav)], rate)[0])
                phone_errors[key][0] += e
                phone_errors[key][1] += n
        if ref_sr != sr:
            ref = torchaudio.functional.resample(torch.from_numpy(ref), ref_sr, sr).numpy()
        dist.append(mel_distance(ref, synth, sr))
        if baseline is not None:
            base.append(mel_distance(ref, untrained, sr))
    out: dict[str, Any] = {"mel_distance_db": float(np.mean(dist)), "utterances": len(dist), "data": str(folder)}
    if baseline is not None:
        out["untrained_mel_distance_db"] = float(np.mean(base))
        out["mel_distance_ratio"] = out["mel_distance_db"] / out["untrained_mel_distance_db"]
    if recognise is not None:
        out["asr_wer"] = errors["synth"][0] / max(errors["synth"][1], 1)
        out["asr_wer_reference"] = errors["reference"][0] / max(errors["reference"][1], 1)
    if recogniser is not None:
        for key, name in (("synth", "per"), ("reference", "per_reference"), ("untrained", "per_untrained")):
            if phone_errors[key][1]:
                out[name] = phone_errors[key][0] / phone_errors[key][1]
        # a reference heard without error counts as one error: the measure's resolution (the ratio stays finite)
        out["per_ratio"] = out["per"] / max(out["per_reference"], 1 / max(phone_errors["reference"][1], 1))
    return out


def eval_text_to_video(cfg: Any, ctx: Any, data: Path, *, limit: int = 32, reference: bool = True,
                       strength: float = 1.0) -> dict[str, Any]:
    """Colour, direction and shape rates of clips generated from held-out captions (one seed per caption:
    ``ctx.seed + i``), each beside the same measure on the corpus' own clips of those captions.

    ``strength`` < 1: each clip is sampled back from the corpus' own clip of its caption noised to that level
    (video to video) instead of from pure noise: with the layout given, what is lost is the denoiser's
    drawing, not its reading of the prompt (issue 18: the demo rounds squares' corners even from 0.3)."""
    import torch

    from aiprod_pipelines.corpus import read_captions
    from aiprod_pipelines.media import frames_to_video, read_mp4, video_to_frames
    from aiprod_pipelines.text_to_video import generate, load_models

    folder = _split_folder(data)
    entries = [e for e in read_captions(folder) if e.get("colour")][:limit]
    if not entries:
        raise AiprodError(f"{folder / 'captions.jsonl'}: no caption naming a colour")
    colours = sorted({e["colour"] for e in entries})
    models = load_models(cfg, ctx, speech=False)
    judges = {"colour": lambda f, e: shown_colour(f) == e["colour"],
              "direction": lambda f, e: shown_direction(f, e["colour"]) == e.get("direction"),
              "shape": lambda f, e: shown_shape(f, e["colour"]) == e.get("shape")}
    backgrounds = _photo_backgrounds(folder, cfg.width, cfg.height)
    if backgrounds is not None:
        judges["photo"] = lambda f, e: shown_photo(f, backgrounds) == e.get("photo")
    hits = {k: 0 for k in judges}
    ref_hits = {k: 0 for k in judges}
    per_colour = {c: [0, 0] for c in colours}
    # each held-out (colour, shape, direction): its hits and the blob's mean fill (the shape judge's measure),
    # the generated clips' beside the corpus' own; shows which combinations fail and how far from the bounds
    per_prompt: dict[str, dict[str, Any]] = {}
    fills: dict[str, tuple[list[float], list[float]]] = {}
    for i, e in enumerate(ctx.progress(entries, desc="text-to-video", unit="clip")):
        truth = read_mp4(e["path"], audio=False).frames if reference or strength < 1 else None
        start = None if strength >= 1 else torch.from_numpy(frames_to_video(truth[:cfg.frames]))
        if start is not None and tuple(start.shape[1:]) != (cfg.frames, cfg.height, cfg.width):
            raise AiprodError(f"{e['path']}: --strength starts from this clip, {start.shape[1]} frames "
                              f"{start.shape[3]}x{start.shape[2]}; the YAML makes {cfg.frames} frames "
                              f"{cfg.width}x{cfg.height}")
        video = generate(models, e["caption"], negative_prompt=cfg.negative_prompt, width=cfg.width,
                         height=cfg.height, frames=cfg.frames, steps=cfg.steps, guidance_scale=cfg.guidance_scale,
                         seed=ctx.seed + i, method=cfg.sampler, two_stage=cfg.two_stage, video=start,
                         strength=strength)
        frames = video_to_frames(video)
        combo = " ".join(str(e[k]) for k in ("colour", "shape", "direction") if e.get(k))
        row = per_prompt.setdefault(combo, {"clips": 0, **{k: 0 for k in judges}})
        row["clips"] += 1
        for k, judge in judges.items():
            hit = bool(judge(frames, e))
            hits[k] += hit
            row[k] += hit
        per_colour.setdefault(e["colour"], [0, 0])
        per_colour[e["colour"]][0] += judges["colour"](frames, e)
        per_colour[e["colour"]][1] += 1
        generated_fills, reference_fills = fills.setdefault(combo, ([], []))
        if (fill := shape_fill(frames, e["colour"])) is not None:
            generated_fills.append(fill)
        if reference:
            for k, judge in judges.items():
                ref_hits[k] += bool(judge(truth, e))
            if (fill := shape_fill(truth, e["colour"])) is not None:
                reference_fills.append(fill)
    for combo, (generated_fills, reference_fills) in fills.items():
        per_prompt[combo]["shape_fill"] = round(float(np.mean(generated_fills)), 3) if generated_fills else None
        if reference:
            per_prompt[combo]["reference_shape_fill"] = (round(float(np.mean(reference_fills)), 3)
                                                         if reference_fills else None)
    n = len(entries)
    out: dict[str, Any] = {"colour_hit_rate": hits["colour"] / n, "direction_hit_rate": hits["direction"] / n,
                           "shape_hit_rate": hits["shape"] / n,
                           **({"photo_hit_rate": hits["photo"] / n} if "photo" in hits else {}), "clips": n,
                           "per_colour": {c: f"{h}/{k}" for c, (h, k) in per_colour.items()},
                           "per_prompt": dict(sorted(per_prompt.items())), "data": str(folder)}
    if strength < 1:
        out["strength"] = strength
    if reference:
        out.update({f"reference_{k}_hit_rate": ref_hits[k] / n for k in judges})
    return out


# -- the command ------------------------------------------------------------------------------------------
def floor_check(kind: str, metrics: dict[str, Any]) -> dict[str, Any] | None:
    """``{"pass", "checks": [{"metric", "op", "floor", "value", "pass"}, ...]}`` for the kind's floors whose
    metric was computed; None when there is none."""
    checks = []
    for key, op, floor in FLOORS.get(kind, []):
        if key not in metrics:
            continue
        value = metrics[key]
        ok = value >= floor if op == ">=" else value <= floor
        checks.append({"metric": key, "op": op, "floor": floor, "value": value, "pass": bool(ok)})
    if not checks:
        return None
    return {"pass": all(c["pass"] for c in checks), "checks": checks}


def evaluate(component: Path, data: Path, *, limit: int = 32, kbps: float = 6.0, frames: int = 17,
             baseline: bool = True, asr: bool = True, device: str = "auto", dtype: str = "float32", seed: int = 0,
             overrides: list[str] | None = None, quiet: bool = True, force_verify: bool = False,
             per: bool = True, recogniser: Path | None = None, strength: float = 1.0) -> dict[str, Any]:
    """Evaluate a component folder (or a text-to-video YAML) on a data folder. Returns the report.

    speech-synthesizer: ``per`` scores phonemes with the ``recogniser`` folder (default: the demo's
    weights/tiny/phoneme_recogniser of this checkout); without one, the report says why it was skipped.
    text-to-video: ``strength`` < 1 starts each clip from the corpus' own, noised (no floor then)."""
    import torch

    from aiprod_core.device import pick_device, pick_dtype, seed_everything
    from aiprod_core.pipeline import RunContext
    from aiprod_core.registry import get_registry

    dev = pick_device(device)
    seed_everything(seed)
    progress = None if quiet else RunContext(source=component, device=dev, dtype=torch.float32, quiet=quiet).progress
    if component.is_file() and component.suffix.lower() in (".yaml", ".yml"):
        from aiprod_core.pipeline import load_document

        what, spec, cfg = load_document(component, overrides)
        if what != "pipeline" or spec.name != "text-to-video":
            raise AiprodError(f"{component}: aiprod eval takes a component folder or a text-to-video pipeline YAML, "
                              f"not a {what} {spec.name!r}")
        ctx = RunContext(source=component, device=dev, dtype=pick_dtype(dtype, dev), seed=seed, quiet=quiet,
                         force_verify=force_verify, registry=get_registry())
        kind, metrics = "text-to-video", eval_text_to_video(cfg, ctx, data, limit=limit, strength=strength)
    elif strength < 1:
        raise AiprodError(f"--strength: video to video is measured for a text-to-video YAML, not {component}")
    elif component.is_dir():
        from aiprod_core.weights import load_component, read_config

        meta = read_config(component).get("_aiprod") or {}
        kind = meta.get("kind")
        model = load_component(component, device=dev, dtype=pick_dtype(dtype, dev), force_verify=force_verify)
        if kind == "video-autoencoder":
            metrics = eval_video_autoencoder(model, data, limit=limit, frames=frames, progress=progress)
        elif kind == "audio-codec":
            metrics = eval_audio_codec(model, data, kbps=kbps, limit=limit, progress=progress)
        elif kind == "speech-synthesizer":
            untrained = None
            if baseline:  # the same architecture, freshly initialised with the seed
                torch.manual_seed(seed)
                untrained = type(model).from_config(model.config).to(dev).eval()
            heard, skipped = None, None
            if per:
                try:
                    from aiprod_tts.recogniser import PhonemeRecogniser, default_recogniser
                except ImportError:  # a voice of another package, without aiprod-tts installed
                    per, skipped = False, "no phoneme recogniser (it is part of aiprod-tts, not installed)"
            if per:
                rec_folder = recogniser if recogniser is not None else default_recogniser()
                if recogniser is not None and not (Path(recogniser) / "config.json").is_file():
                    raise AiprodError(f"--recogniser {recogniser}: not a component folder (config.json + "
                                      "model.safetensors of a phoneme-recogniser)")
                if rec_folder is None or not (Path(rec_folder) / "config.json").is_file():
                    skipped = (f"no phoneme recogniser ({rec_folder or 'weights/tiny/phoneme_recogniser'} is not "
                               "beside this install; pass --recogniser FOLDER)")
                else:
                    heard = PhonemeRecogniser.from_pretrained(rec_folder, device=dev, dtype=torch.float32,
                                                              force_verify=force_verify)
            metrics = eval_speech(model, data, limit=limit, baseline=untrained, asr=asr, progress=progress,
                                  recogniser=heard)
            if skipped is not None:
                metrics["per_skipped"] = skipped
        else:
            raise AiprodError(f"{component}: no metric for a {kind or 'component of unknown kind'} "
                              f"(aiprod eval knows {', '.join(k for k in FLOORS if k != 'text-to-video')}, "
                              "and text-to-video pipeline YAMLs)")
    else:
        raise AiprodError(f"{component}: not a component folder or a pipeline YAML")
    report = {"component": str(component), "kind": kind, **metrics}
    check = floor_check(kind, metrics) if strength >= 1 else None  # from the ground truth: a diagnosis, no floor
    if check is not None:
        report["floor"] = check
    return report


def format_report(report: dict[str, Any]) -> str:
    lines = [f"{report['component']} ({report['kind']}) on {report.get('data')}"]
    for k, v in report.items():
        if k in ("component", "kind", "data", "floor", "per_prompt"):
            continue
        lines.append(f"  {k:<28} {v:.3f}" if isinstance(v, float) else f"  {k:<28} {v}")
    for combo, row in report.get("per_prompt", {}).items():  # text-to-video: one line per held-out combination
        n = row["clips"]
        hits = ", ".join(f"{k} {row[k]}/{n}" for k in ("colour", "direction", "shape", "photo") if k in row)
        fill = "-" if row.get("shape_fill") is None else f"{row['shape_fill']:.2f}"  # "-": the colour not shown
        if row.get("reference_shape_fill") is not None:
            fill += f" (corpus {row['reference_shape_fill']:.2f})"
        lines.append(f"  {combo:<28} {hits}; shape fill {fill}")
    f = report.get("floor")
    for c in f["checks"] if f is not None else []:
        verdict = "PASS" if c["pass"] else "FAIL"
        lines.append(f"  floor: {c['metric']} {c['op']} {c['floor']}: {c['value']:.3f} {verdict}")
    return "\n".join(lines)


@click.command(name="eval")
@click.argument("component", type=click.Path(path_type=Path))
@click.argument("data", type=click.Path(path_type=Path))
@click.option("--limit", type=int, default=32, show_default=True, help="Most clips / files / utterances used.")
@click.option("--kbps", type=float, default=6.0, show_default=True, help="audio-codec: bitrate (sets the codebooks).")
@click.option("--frames", type=int, default=17, show_default=True, help="video-autoencoder: frames per clip (1 + 4k).")
@click.option("--no-baseline", is_flag=True, help="speech-synthesizer: skip the untrained reference model.")
@click.option("--no-asr", is_flag=True, help="speech-synthesizer: skip the pocketsphinx word error rate.")
@click.option("--recogniser", type=click.Path(path_type=Path), default=None,
              help="speech-synthesizer: phoneme recogniser folder [default: weights/tiny/phoneme_recogniser].")
@click.option("--no-per", is_flag=True, help="speech-synthesizer: skip the phoneme error rate.")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="text-to-video: override a YAML key.")
@click.option("--strength", type=click.FloatRange(0, 1, min_open=True), default=1.0, show_default=True,
              help="text-to-video: start each clip from the corpus' own noised to this level (1: pure noise); "
                   "no floor below 1.")
@click.option("--device", default="auto", show_default=True)
@click.option("--dtype", default="float32", show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.option("--check", is_flag=True, help="Exit with code 1 when the floor is not met.")
@click.option("--force-verify", is_flag=True, help="Re-hash every weight file.")
def eval_command(component, data, limit, kbps, frames, no_baseline, no_asr, recogniser, no_per, overrides, strength,
                 device, dtype, seed, as_json, check, force_verify) -> None:
    """Measure COMPONENT (a component folder, or a text-to-video YAML) on DATA against its quality floor.

    \b
    video-autoencoder  PSNR on mp4 clips                 floor >= 30 dB
    audio-codec        SI-SDR at --kbps on wav files     floor >= 8 dB
    speech-synthesizer log-mel distance (LJSpeech dir)   floor <= 0.5 x an untrained model's;
                       phoneme error rate (--recogniser)  floor <= 1.5 x the reference recordings';
                       pocketsphinx WER, printed beside the reference recordings' own
    text-to-video      on held-out captions: colour-hit rate >= 0.90, direction-hit rate >= 0.80,
                       shape-hit rate >= 0.70; on a whole-photo corpus also the photo-hit rate (no floor)
    """
    import os

    quiet = as_json or os.environ.get("AIPROD_QUIET", "") not in ("", "0")
    report = evaluate(component, data, limit=limit, kbps=kbps, frames=frames, baseline=not no_baseline,
                      asr=not no_asr, device=device, dtype=dtype, seed=seed, overrides=list(overrides), quiet=quiet,
                      force_verify=force_verify, per=not no_per, recogniser=recogniser, strength=strength)
    click.echo(json.dumps(report) if as_json else format_report(report))
    if check and report.get("floor") is not None and not report["floor"]["pass"]:
        raise click.exceptions.Exit(1)
