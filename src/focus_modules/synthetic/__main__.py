"""``python -m focus_modules.synthetic --out DIR --n 100 --seed 0``: write a synthetic V*Bench."""

from __future__ import annotations

import argparse

from .vstar import write_vstar_layout


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m focus_modules.synthetic",
        description="Write synthetic fine-grained VQA questions in the V*Bench folder layout.",
    )
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--n", type=int, default=100, help="questions per family (default 100)")
    parser.add_argument("--seed", type=int, default=0, help="dataset seed (default 0)")
    args = parser.parse_args(argv)
    paths = write_vstar_layout(args.out, args.n, seed=args.seed)
    print(f"wrote {len(paths)} questions to {args.out}")


if __name__ == "__main__":
    main()
