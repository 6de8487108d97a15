"""``rexthinker-tiny``: a tiny random Qwen2.5-VL folder (``rexthinker_rl.model.tiny``), or a random model of a real shape
with fewer blocks (``--like qwen2.5-vl-7b``: ``rexthinker_rl.model.shapes``), built offline."""

from __future__ import annotations

import argparse
import sys

from rexthinker_rl.apps.console import console_entry
from rexthinker_rl.model.shapes import ShapeError, build_shaped_model
from rexthinker_rl.model.tiny import TinySpec, build_tiny_model
from rexthinker_rl.run.outputs import writing


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Build a tiny (or real-shaped) random Qwen2.5-VL folder offline.")
    parser.add_argument("out_dir")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--like",
        default="",
        help="a real shape (qwen2.5-vl-7b, qwen2.5-vl-3b): its every dimension, vocabulary and special-token ids, "
        "with --layers text and --vision-layers vision blocks",
    )
    parser.add_argument("--hidden", type=int, default=None, help=f"hidden size (default {TinySpec.hidden_size})")
    parser.add_argument("--layers", type=int, default=TinySpec.num_layers, help="text decoder blocks")
    parser.add_argument("--vision-layers", type=int, default=TinySpec.vision_depth, help="vision blocks")
    parser.add_argument("--heads", type=int, default=None, help="attention heads (head_dim >= 64)")
    parser.add_argument("--kv-heads", type=int, default=None)
    parser.add_argument("--intermediate", type=int, default=None, help="MLP width")
    parser.add_argument("--max-pixels", type=int, default=None)
    parser.add_argument(
        "--rope-theta", type=float, default=None, help=f"text RoPE base (default {TinySpec.rope_theta:g})"
    )
    parser.add_argument("--overwrite", action="store_true", help="replace OUT_DIR when it is a model folder")
    return parser


@console_entry("rexthinker-tiny")
def main(argv: list[str] | None = None) -> None:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.rope_theta is not None and args.rope_theta <= 0:
        parser.exit(
            2, f"error: --rope-theta {args.rope_theta:g}: the RoPE base must be above 0 (Qwen2.5-VL's is 1e6)\n"
        )
    sizes = {"--hidden": args.hidden, "--heads": args.heads, "--kv-heads": args.kv_heads}
    sizes.update(
        {"--intermediate": args.intermediate, "--max-pixels": args.max_pixels, "--rope-theta": args.rope_theta}
    )
    if args.like:
        given = [flag for flag, value in sizes.items() if value is not None]
        if given:
            parser.exit(2, f"error: {', '.join(given)} cannot change a real shape (--like {args.like})\n")
        try:
            with writing(args.out_dir, "OUT_DIR"):
                path = build_shaped_model(
                    args.out_dir, args.like, args.layers, args.vision_layers, seed=args.seed, overwrite=args.overwrite
                )
        except (ShapeError, ValueError) as error:
            parser.exit(2, f"error: {error}\n")
        print(
            f"{args.like}-shaped Qwen2.5-VL ({args.layers} text, {args.vision_layers} vision blocks) written to {path}"
        )
        return
    defaults = TinySpec()
    spec = TinySpec(
        hidden_size=args.hidden or defaults.hidden_size,
        num_layers=args.layers,
        num_heads=args.heads or defaults.num_heads,
        num_kv_heads=args.kv_heads or defaults.num_kv_heads,
        intermediate_size=args.intermediate or defaults.intermediate_size,
        vision_depth=args.vision_layers,
        max_pixels=args.max_pixels or defaults.max_pixels,
        rope_theta=args.rope_theta or defaults.rope_theta,
    )
    try:
        with writing(args.out_dir, "OUT_DIR"):
            path = build_tiny_model(args.out_dir, seed=args.seed, spec=spec, overwrite=args.overwrite)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    print(f"tiny Qwen2.5-VL written to {path}")


if __name__ == "__main__":
    main()
