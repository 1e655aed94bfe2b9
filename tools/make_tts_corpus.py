#!/usr/bin/env python
"""Write a small LJSpeech-layout corpus spoken by espeak-ng (tests and demo).

    python tools/make_tts_corpus.py data/tts-demo -n 64
    aiprod train configs/train/tts_training.yaml --set data.root=data/tts-demo
"""

from aiprod_tts.corpus import main

if __name__ == "__main__":
    main()
