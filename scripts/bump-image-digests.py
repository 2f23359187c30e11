#!/usr/bin/env python3
"""Rewrite the digests of the Dockerfile's base images (`ARG NAME=repo:tag@sha256:<digest>`).

Each IMAGE=DIGEST argument sets the digest of that repo:tag; with --resolve, every image without one on the
command line is looked up with `crane digest` or `docker buildx imagetools inspect` (whichever is on PATH;
both need the registry). Other lines are left byte for byte. Exit 1 when an argument names no image of the
Dockerfile or a digest is malformed.

usage: scripts/bump-image-digests.py [--dockerfile PATH] [--resolve] [repo:tag=sha256:HEX ...]
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PINNED = re.compile(r"^(ARG \w+=)(\S+:\S+)@(sha256:[0-9a-f]{64})$", re.M)
DIGEST = re.compile(r"sha256:[0-9a-f]{64}")


def pinned_images(text: str) -> list[str]:
    """The repo:tag of every pinned base image, in order."""
    return [m[2] for m in PINNED.finditer(text)]


def rewrite(text: str, digests: dict[str, str]) -> str:
    """`text` with the digest of each image in `digests` replaced; ValueError for an unknown image or digest."""
    unknown = set(digests) - set(pinned_images(text))
    if unknown:
        raise ValueError(f"not a pinned image of the Dockerfile: {', '.join(sorted(unknown))}")
    for image, digest in digests.items():
        if not DIGEST.fullmatch(digest):
            raise ValueError(f"{image}: {digest!r} is not sha256:<64 hex digits>")
    return PINNED.sub(lambda m: f"{m[1]}{m[2]}@{digests.get(m[2], m[3])}", text)


def resolve(image: str) -> str:
    """The registry's current digest of `image` (its manifest list where there is one)."""
    if shutil.which("crane"):
        cmd = ["crane", "digest", image]
    elif shutil.which("docker"):
        cmd = ["docker", "buildx", "imagetools", "inspect", image, "--format", "{{.Manifest.Digest}}"]
    else:
        raise SystemExit(f"{image}: neither crane nor docker on PATH; give its digest as {image}=sha256:...")
    return subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=120).stdout.strip()


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dockerfile", type=Path, default=ROOT / "Dockerfile")
    ap.add_argument("--resolve", action="store_true", help="look up the images not given (needs the registry)")
    ap.add_argument("digests", nargs="*", metavar="repo:tag=sha256:HEX")
    args = ap.parse_args(argv)
    text = args.dockerfile.read_text()
    digests = dict(arg.rsplit("=", 1) for arg in args.digests)
    if args.resolve:
        digests |= {image: resolve(image) for image in pinned_images(text) if image not in digests}
    try:
        new = rewrite(text, digests)
    except ValueError as e:
        print(f"bump-image-digests: {e}", file=sys.stderr)
        return 1
    args.dockerfile.write_text(new)
    for image in pinned_images(new):
        print(f"{image}@{digests.get(image, 'unchanged')}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
