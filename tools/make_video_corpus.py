#!/usr/bin/env python
"""Write the captioned video corpus (coloured shapes moving over skimage.data photos), offline.

    python tools/make_video_corpus.py data/video_corpus              # 256 train + 32 held-out clips, 64x64x17
    python tools/make_video_corpus.py /tmp/vc --train 16 --heldout 8  # a small one for tests

Deterministic: the same settings (--seed included) give the same clips and captions. See
aiprod_pipelines.corpus for the layout and the held-out rule.
"""

from aiprod_pipelines.corpus import main

if __name__ == "__main__":
    main()
