"""``python -m focus_modules.synthetic --out DIR --n 100 --seed 0 [--canvas 8192]``: write a synthetic
V*Bench (``--canvas``: larger canvases, objects of the same pixel size)."""

from __future__ import annotations

import argparse

from .records import QUESTION_FAMILIES
from .scene import SceneConfig
from .vstar import JPEG_QUALITY, write_vstar_layout


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m focus_modules.synthetic",
        description="Write synthetic fine-grained VQA questions in the V*Bench folder layout.",
    )
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--n", type=int, default=100, help="questions per family (default 100)")
    parser.add_argument("--seed", type=int, default=0, help="dataset seed (default 0)")
    parser.add_argument(
        "--canvas",
        type=int,
        default=None,
        help="largest canvas side in pixels; sides lie in (3/4 x CANVAS, CANVAS) and objects keep their "
        "28-52 px (default: the 1536-2048 px scenes, the same as --canvas 2048; 8192: HR-Bench 8K-like)",
    )
    parser.add_argument(
        "--families",
        default=",".join(QUESTION_FAMILIES),
        help=f"comma-separated question families to write (default: {','.join(QUESTION_FAMILIES)})",
    )
    parser.add_argument("--jpeg-quality", type=int, default=JPEG_QUALITY, help=f"default {JPEG_QUALITY}")
    args = parser.parse_args(argv)
    families = tuple(f.strip() for f in args.families.split(",") if f.strip())
    unknown = sorted(set(families) - set(QUESTION_FAMILIES))
    if unknown:
        parser.error(f"unknown families {unknown}; choose from {', '.join(QUESTION_FAMILIES)}")
    try:
        config = None if args.canvas is None else SceneConfig.for_canvas(args.canvas)
    except ValueError as err:
        parser.error(f"--canvas {args.canvas}: {err}")
    paths = write_vstar_layout(
        args.out, args.n, seed=args.seed, config=config, families=families, jpeg_quality=args.jpeg_quality
    )
    print(f"wrote {len(paths)} questions to {args.out}")


if __name__ == "__main__":
    main()
