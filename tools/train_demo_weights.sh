#!/usr/bin/env bash
# Reproduce the embedded demo weights (weights/tiny/*) from nothing: generate the corpora offline, train
# every component with its configs/train/tiny/*_demo.yaml, copy each final component folder (config.json,
# model.safetensors, MANIFEST.json, CHECKSUMS.sha256) into weights/tiny/, then print every quality floor.
#
#   bash tools/train_demo_weights.sh            # about 2 h on 2 CPU cores (one thread per job, 2-3 jobs at once)
#
# Seeds are fixed; the corpora are pure functions of their settings. Bit-identical weights also need the
# same torch build and thread count (OMP_NUM_THREADS=1 here), as float reductions differ across builds.
set -euo pipefail
cd "$(dirname "$0")/.."
export OMP_NUM_THREADS=1
mkdir -p data logs

# 1. data: the captioned video corpus (256 + 32 held-out clips) and the espeak-ng speech corpus (240 + 16)
[ -d data/video_corpus ] || python tools/make_video_corpus.py data/video_corpus --quiet
[ -d data/tts_corpus ] || python tools/make_tts_corpus.py data/tts_corpus -n 240 --heldout 16
# the HW-VAE decoder's third stage: a larger draw of the same generator (2,048 clips; the first 256 are
# data/video_corpus/train's), and three re-drawn held-out sets (the floors' fresh data)
[ -d data/video_corpus_2k ] || python tools/make_video_corpus.py data/video_corpus_2k --train 2048 --quiet
for s in 1 2 3; do
  [ -d data/video_draw$s ] || python tools/make_video_corpus.py data/video_draw$s --train 1 --draw-seed $s --quiet
done
# the text-to-video corpus: the same generator with each photo's whole square and paths through the frame's
# centre that cross half of it (aiprod_pipelines.corpus: the tiny denoiser placed and moved the shape at chance
# on the default corpus), 2,048 clips
T2V="--background-crop whole --path centred --travel 0.5,0.58"
[ -d data/t2v_corpus ] || python tools/make_video_corpus.py data/t2v_corpus --train 2048 $T2V --quiet
# the same with larger shapes (radius 0.22-0.25 of the side instead of 0.12-0.16; shorter paths, so that they
# stay in the frame), on which the denoiser is fine-tuned (a shape then spans several tokens); the
# text-to-video floors are measured on its held-out split and three re-drawn sets
SHAPES="--background-crop whole --path centred --radius 0.22,0.25 --travel 0.32,0.35"
[ -d data/t2v_shapes ] || python tools/make_video_corpus.py data/t2v_shapes --train 2048 $SHAPES --quiet
for s in 1 2 3; do
  [ -d data/t2v_shapes_draw$s ] || python tools/make_video_corpus.py data/t2v_shapes_draw$s --train 1 --draw-seed $s $SHAPES --quiet
done
# the phoneme recogniser's own espeak-ng corpus (another seed: 1,200 + 64 held-out utterances)
[ -d data/recogniser_corpus ] || python tools/make_tts_corpus.py data/recogniser_corpus -n 1200 --heldout 64 --seed 7
# four more draws of the speech corpus (240 sentences each), from which every sentence of the held-out sets the
# speech floors are measured on (corpus seeds 0, 101-103) is removed: the codec's fine-tune reads them as they
# are, the voice's last stages as one LJSpeech folder with data/tts_corpus/train (data/tts_extra/train)
for s in 1 2 3 4; do
  [ -d data/codec_extra/s$s ] || python tools/make_tts_corpus.py data/codec_extra/s$s -n 240 --seed $s
done
python - <<'EOF'
from pathlib import Path
from aiprod_tts.corpus import make_sentences
held = {t.lower()[:-1] for seed in (0, 101, 102, 103) for t in make_sentences(256, seed)[240:]}
out = Path("data/tts_extra/train")
(out / "wavs").mkdir(parents=True, exist_ok=True)
lines = []
for root in [Path("data/tts_corpus/train")] + sorted(Path("data/codec_extra").glob("s*")):
    for line in (root / "metadata.csv").read_text().splitlines():
        uid, text, _ = line.split("|", 2)
        wav = root / "wavs" / f"{uid}.wav"
        if text.lower()[:-1] in held:
            wav.unlink(missing_ok=True)
            continue
        new = f"{root.name}-{uid}"  # train-ESP001-0000, s1-ESP001-0000, ...
        link = out / "wavs" / f"{new}.wav"
        if not link.exists():
            link.symlink_to(wav.resolve())
        lines.append(line.replace(uid, new, 1))
(out / "metadata.csv").write_text("\n".join(lines) + "\n")
EOF

publish() {  # publish RUN_FOLDER NAME: the verified component folder becomes weights/tiny/NAME
  aiprod verify "$1"
  rm -rf "weights/tiny/$2.tmp" && mkdir -p weights/tiny && cp -r "$1" "weights/tiny/$2.tmp"
  rm -rf "weights/tiny/$2" && mv "weights/tiny/$2.tmp" "weights/tiny/$2"
}

# 2. the autoencoder and the codec (one 10,000-step cosine)
CODEC_YAML=configs/train/tiny/audio_codec_demo.yaml
aiprod train $CODEC_YAML > logs/codec.log 2>&1 &
CODEC=$!
aiprod train configs/train/tiny/hwvae_demo.yaml > logs/hwvae.log 2>&1

# 3. the voice and the text encoder. The voice: the frontend's G2P model (CMUdict, 2% of words held out),
#    a first acoustic model on espeak-ng phonemes (needs aiprod-tts[espeak]), fine-tuned on the lexicon + G2P
#    phonemes, then the vocoder (iSTFT head, issue 21); then both fine-tuned on five times the sentences
#    (data/tts_extra), the vocoder on the acoustic model's own mels, then the acoustic model again, 6,000 steps
#    (tts_extra2_demo.yaml; the published voice's last stage): the published voice needs no system
#    program and carries the G2P model in weights/tiny/tts/g2p
G2P_YAML=configs/train/tiny/g2p_demo.yaml  # 700 steps of a 700-step cosine, then extended to 1,900
( aiprod train $G2P_YAML --set train.max_steps=700 && aiprod train $G2P_YAML && aiprod train configs/train/tiny/tts_demo.yaml \
  && aiprod train configs/train/tiny/tts_lexicon_demo.yaml && aiprod train configs/train/tiny/tts_vocoder_demo.yaml \
  && aiprod train configs/train/tiny/tts_extra_demo.yaml && aiprod train configs/train/tiny/tts_vocoder_extra_demo.yaml \
  && aiprod train configs/train/tiny/tts_vocoder_predicted_demo.yaml && aiprod train configs/train/tiny/tts_extra2_demo.yaml ) \
  > logs/tts.log 2>&1 &
TTS=$!
aiprod train configs/train/tiny/text_encoder_demo.yaml > logs/textenc.log 2>&1
publish runs/demo/text_encoder/final/model text_encoder

# 4. the denoiser and the upsampler on the autoencoder's latents (+ caption embeddings), encoded once;
#    meanwhile the decoder alone is fine-tuned (its encoder, hence these latents, stay as they are)
python tools/cache_latents.py data/t2v_corpus/train runs/demo/shdt_cache --quiet \
    --autoencoder runs/demo/hwvae/final/model --text-encoder weights/tiny/text_encoder --size 64 --aspect 1:1 \
    --text-field caption --text-field prompt
DEC_YAML=configs/train/tiny/hwvae_decoder_demo.yaml  # 1,200 steps, then extended thrice (PSNR kept rising)
( aiprod train $DEC_YAML --set train.max_steps=1200 && aiprod train $DEC_YAML --set train.max_steps=2400 \
  && aiprod train $DEC_YAML --set train.max_steps=3600 && aiprod train $DEC_YAML ) > logs/hwvae_decoder.log 2>&1 &
DECODER=$!
aiprod train configs/train/tiny/upsampler_demo.yaml > logs/upsampler.log 2>&1
publish runs/demo/upsampler/final/model upsampler
SHDT_YAML=configs/train/tiny/shdt_demo.yaml  # three legs, each resuming the last (see the YAML)
leg() { aiprod train $SHDT_YAML --set train.max_steps=$1 --set flow.min_shift=1 \
        --set "curriculum=[{resolution: 64, frames: 17, steps: $1, batch_size: 16}]"; }
( leg 4000 && leg 8000 && aiprod train $SHDT_YAML ) > logs/shdt.log 2>&1
# then fine-tuned on the larger shapes, in four legs (4,000, 8,000, 12,000, 16,000 steps), and 2,000 steps more
# from that result with the noise levels moved towards 1 (see the YAML)
python tools/cache_latents.py data/t2v_shapes/train runs/demo/shdt_shapes_cache --quiet \
    --autoencoder runs/demo/hwvae/final/model --text-encoder weights/tiny/text_encoder --size 64 --aspect 1:1 \
    --text-field caption --text-field prompt
SHAPES_YAML=configs/train/tiny/shdt_shapes_demo.yaml
shapes_leg() { aiprod train $SHAPES_YAML --set train.max_steps=$1 \
               --set "curriculum=[{resolution: 64, frames: 17, steps: $1, batch_size: 16}]"; }
( shapes_leg 4000 && shapes_leg 8000 && shapes_leg 12000 && aiprod train $SHAPES_YAML \
  && aiprod train $SHAPES_YAML --set model.init_weights=runs/demo/shdt_shapes/final/model --set flow.min_shift=3 \
       --set train.lr=3e-4 --set train.max_steps=2000 --set train.output_dir=runs/demo/shdt_shapes_hi \
       --set "curriculum=[{resolution: 64, frames: 17, steps: 2000, batch_size: 16}]" ) > logs/shdt_shapes.log 2>&1
# then a convolution head grown on that result: 4,000 steps, resumed to 8,000 (see the YAML)
HEAD_YAML=configs/train/tiny/shdt_head_demo.yaml
( aiprod train $HEAD_YAML --set train.max_steps=4000 --set "curriculum=[{resolution: 64, frames: 17, steps: 4000, batch_size: 16}]" \
  && aiprod train $HEAD_YAML ) > logs/shdt_head.log 2>&1
publish runs/demo/shdt_head/final/model shdt
# the decoder again (third stage), for PSNR on fresh draws of the held-out clips: pixel MSE, 2,048 clips at
# their native pixels. Its cosine was re-planned while it ran on a crowded CPU (each stop is a checkpoint,
# each restart resumes it exactly, with the new schedule): 2,000 steps, 4,500, 3,000, 1,200, 1,600, 1,800, 1,650
MSE_YAML=configs/train/tiny/hwvae_decoder_mse_demo.yaml
wait $DECODER
( aiprod train $MSE_YAML --set train.max_steps=2000 --set train.stop_at=200 \
  && aiprod train $MSE_YAML --set train.max_steps=4500 --set train.stop_at=700 \
  && aiprod train $MSE_YAML --set train.max_steps=3000 --set train.stop_at=800 \
  && aiprod train $MSE_YAML --set train.max_steps=1200 --set train.stop_at=1000 \
  && aiprod train $MSE_YAML --set train.max_steps=1600 --set train.stop_at=1100 \
  && aiprod train $MSE_YAML --set train.max_steps=1800 --set train.stop_at=1200 \
  && aiprod train $MSE_YAML ) > logs/hwvae_decoder_mse.log 2>&1
publish runs/demo/hwvae_decoder_mse/final/model hwvae
wait $TTS && publish runs/demo/tts_extra2/final/tts tts
wait $CODEC && publish runs/demo/audio_codec/final/codec audio_codec
# ... then fine-tuned (450 steps, extended to 750; the floor's metric -SI-SDR added to its losses) on four more espeak-ng draws of
# the corpus (data/codec_extra, written in step 1)
CODEC_FT=configs/train/tiny/audio_codec_demo_ft.yaml
( aiprod train $CODEC_FT --set train.max_steps=450 && aiprod train $CODEC_FT ) > logs/codec_ft.log 2>&1
publish runs/demo/audio_codec_ft/final/codec audio_codec
# the phoneme recogniser (the voice's intelligibility measure in aiprod eval): after the voice, as its targets
# are the phones of the voice's frontend (CMUdict + weights/tiny/tts/g2p)
aiprod train configs/train/tiny/phoneme_recogniser_demo.yaml > logs/phoneme_recogniser.log 2>&1
publish runs/demo/phoneme_recogniser/final/recogniser phoneme_recogniser

# 5. the floors, on the held-out splits
aiprod eval weights/tiny/hwvae data/video_corpus
for s in 1 2 3; do aiprod eval weights/tiny/hwvae data/video_draw$s; done
aiprod eval weights/tiny/audio_codec data/tts_corpus --kbps 6
for s in 101 102 103; do  # the codec on three re-drawn held-out sets (other sentences)
  [ -d data/codec_draws/s$s ] || python tools/make_tts_corpus.py data/codec_draws/s$s -n 240 --seed $s --heldout 16
  aiprod eval weights/tiny/audio_codec data/codec_draws/s$s --kbps 6
done
aiprod eval weights/tiny/tts data/tts_corpus   # + phoneme error rates (weights/tiny/phoneme_recogniser)
aiprod tts per weights/tiny/phoneme_recogniser data/recogniser_corpus
aiprod tts g2p-eval weights/tiny/tts/g2p
aiprod eval examples/text_to_video.yaml data/t2v_shapes
for s in 1 2 3; do aiprod eval examples/text_to_video.yaml data/t2v_shapes_draw$s; done
