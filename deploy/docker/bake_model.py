"""Bake Bark's weights into an image: `python bake_model.py suno/bark-small /models` writes /models/bark-small.

Download only: BarkModel and BarkProcessor are read from the hub and written back with save_pretrained, the local
layout chorus-synth loads with HF_HUB_OFFLINE=1 (safetensors weights, tokenizer, and every voice preset as .npy).
BarkProcessor records the absolute directory it saved its presets to, so the directory written here must be the one
the image serves from.
"""

from __future__ import annotations

import os
import sys


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: bake_model.py HUB_ID ROOT", file=sys.stderr)
        return 2
    source, root = argv
    from transformers import BarkModel, BarkProcessor

    target = os.path.join(root, source.rstrip("/").rsplit("/", 1)[-1])
    BarkModel.from_pretrained(source).save_pretrained(target)
    BarkProcessor.from_pretrained(source).save_pretrained(target)
    # What chorus-synth does at start, without the hub: a directory that cannot load fails the build, not a node.
    processor = BarkProcessor.from_pretrained(target, local_files_only=True)
    voices = sorted(processor.available_voice_presets)
    if not voices:
        print(f"{target}: no voice presets were saved", file=sys.stderr)
        return 1
    print(f"baked {source} into {target}: {len(voices)} voices")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
