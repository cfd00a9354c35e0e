"""Query a served udon model over HTTP with nothing but numpy and Pillow.

    mlflow models serve -m models:/udon-universal-embedding@champion --env-manager local -p 5001
    python examples/serve_client.py http://127.0.0.1:5001 photo.jpg [more.jpg ...] [--size 64]

The served model takes preprocessed tensors; this does the preprocessing its MLflow metadata and version
description state (``preprocess``: image size, mean, std), so its vectors match ``udon embed``'s.
"""

from __future__ import annotations

import argparse
import json
import urllib.request

import numpy as np
from PIL import Image


def preprocess(path: str, size: int, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5)) -> np.ndarray:
    """One image as the float32 ``[3, size, size]`` array the model expects."""
    with Image.open(path) as im:
        im.load()
        if im.mode in ("RGBA", "LA") or (im.mode == "P" and "transparency" in im.info):
            rgba = im.convert("RGBA")
            im = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
            im.alpha_composite(rgba)  # transparency onto white
        elif im.mode.startswith("I;16"):
            im = Image.fromarray(np.rint(np.asarray(im, dtype=np.float64) / 257).astype(np.uint8))
        im = im.convert("RGB")
    w, h = im.size
    scale = size / min(w, h)  # the shorter side becomes `size`
    im = im.resize((max(size, int(w * scale)), max(size, int(h * scale))), Image.BILINEAR, reducing_gap=None)
    left, top = round((im.width - size) / 2), round((im.height - size) / 2)
    im = im.crop((left, top, left + size, top + size))
    x = (np.asarray(im, dtype=np.float32) / 255.0 - np.array(mean, np.float32)) / np.array(std, np.float32)
    return x.transpose(2, 0, 1)


def embed(url: str, paths: list[str], size: int) -> np.ndarray:
    """``[n, 64]`` unit vectors from the server at ``url``."""
    batch = np.stack([preprocess(p, size) for p in paths])
    request = urllib.request.Request(f"{url}/invocations", data=json.dumps({"inputs": batch.tolist()}).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=120) as response:
        return np.asarray(json.loads(response.read())["predictions"], dtype=np.float32)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url", help="the server, e.g. http://127.0.0.1:5001")
    parser.add_argument("images", nargs="+")
    parser.add_argument("--size", type=int, default=64,
                        help="the model's image size: preprocess.image_size in its MLflow metadata (demo: 64)")
    args = parser.parse_args()
    for path, vector in zip(args.images, embed(args.url, args.images, args.size)):
        print(path, " ".join(f"{x:.4f}" for x in vector))


if __name__ == "__main__":
    main()
