#!/usr/bin/env python3
"""Quantize a component folder to FP8 (E4M3): the same code as `aiprod quantize`.

    python tools/quantize_model.py weights/shdt-v1 weights/shdt-v1-fp8 --backend quanto
"""

import sys

from aiprod_core.cli import main

if __name__ == "__main__":
    main(["quantize", *sys.argv[1:]])
