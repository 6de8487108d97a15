"""``rexthinker-data``: dataset tools behind one command.

``synth`` (synthetic shapes set), ``validate`` (check a training set), ``repair`` (fix a training set's GT-not-in-hints
rows), ``show-prompt`` (the chat text a prompt preset gives the model), and the preparation path for real data:
``from-refcoco`` (RefCOCO-family files -> interchange JSON), ``add-candidates`` (detector box hints + GT-in-hints
repair), ``convert`` (interchange JSON -> training parquet), ``cot`` (templated chain-of-thought SFT targets) and
``humanref-cot`` (HumanRef-CoT TSV files -> training parquet and pictures).

No command replaces an existing output without ``--overwrite``, and none ever replaces one of its inputs or a folder
holding anything but its own kind of output (``rexthinker_rl.run.outputs``).

Bad input (a missing file, a malformed dataset, an impossible argument) prints one ``error:`` line and exits 2;
``validate`` exits 1 when any row is bad, and ``add-candidates`` / ``convert`` exit 1 when bad records stopped them
(``--on-error fail``).
"""

from __future__ import annotations

import argparse
import functools
import pickle
import sys
from pathlib import Path

from data_tools.synth_options import SYNTH_CHOICES, TEACHER_HELP, TEACHERS
from rexthinker_rl.apps.console import console_entry
from rexthinker_rl.config import DataConfig
from rexthinker_rl.data.dataset import DataError
from rexthinker_rl.run.outputs import check_new_file, check_new_folder, folder_holds_only, writing

_DEFAULT_SIZE = 112
_MAX_ERROR_LINES = 20  # more go to the JSON report only


def _synth(args: argparse.Namespace) -> int:
    from data_tools.synthetic import make_synthetic_dataset
    from data_tools.teacher import check_teacher, teach

    check_teacher(args.teacher, args.teacher_bias)  # before anything is written
    for split in ("train", "val"):
        check_new_file(Path(args.out) / f"{split}.parquet", args.overwrite)
    taught = []  # how many train targets the teacher changed, counted before the one write

    def teach_train(rows: list[dict]) -> None:  # the targets as the teacher writes them; answers, val keep the truth
        taught.append((teach(rows, args.teacher, args.teacher_bias, args.seed), len(rows)))

    paths = make_synthetic_dataset(
        args.out,
        num_train=args.num_train,
        num_val=args.num_val,
        seed=args.seed,
        image_size=args.image_size,
        min_pixels=args.min_pixels,
        max_pixels=args.max_pixels,
        rejection_fraction=args.rejection_fraction,
        multi_fraction=args.multi_fraction,
        hints=tuple(args.hints),
        distractors=tuple(args.distractors),
        **{name: getattr(args, name) for name in (flag[2:].replace("-", "_") for flag in SYNTH_CHOICES)},
        teach_train=None if args.teacher == "truthful" else teach_train,
    )
    for changed, rows in taught:
        print(f"train: {changed} of {rows} SFT targets written by the {args.teacher} teacher (--teacher-bias "
              f"{args.teacher_bias}); answers, prompts and val unchanged")  # fmt: skip
    for split, path in paths.items():
        print(f"{split}: {path}")
    return 0


def _validate(args: argparse.Namespace) -> int:
    from data_tools.validate import validate_file

    report = validate_file(
        args.file,
        min_pixels=args.min_pixels,
        max_pixels=args.max_pixels,
        image_key=args.image_key,
        prompt_key=args.prompt_key,
        answer_key=args.answer_key,
        apply_exif=not args.ignore_exif,
    )
    for problem in report.problems:
        print(problem.line())
    if report.note:
        print(report.note)
    print(report.summary())
    return 0 if report.ok else 1


def _from_refcoco(args: argparse.Namespace) -> int:
    from data_tools.refcoco import from_refcoco

    check_new_file(args.out, args.overwrite, inputs=[args.refs, args.instances])
    report = from_refcoco(
        args.refs,
        args.instances,
        args.out,
        split=args.split,
        image_root=args.image_root,
        max_per_image=args.max_per_image,
        seed=args.seed,
        limit=args.limit,
    )
    for name in report.missing_images[:_MAX_ERROR_LINES]:
        print(f"missing image: {name}")
    print(report.summary())
    return 0


def _print_errors(lines: list[str], out: str) -> None:
    from data_tools.interchange import report_path

    for line in lines[:_MAX_ERROR_LINES]:
        print(line)
    if len(lines) > _MAX_ERROR_LINES:
        print(f"... and {len(lines) - _MAX_ERROR_LINES} more bad records, all listed in {report_path(out)}")


def _add_candidates(args: argparse.Namespace) -> int:
    from data_tools.candidates import add_candidates
    from data_tools.detectors import load_detector, parse_detector_args

    check_new_file(args.out, args.overwrite, inputs=[args.anno])
    report = add_candidates(
        args.anno,
        args.image_root,
        load_detector(args.detector),
        args.out,
        detector_spec=args.detector,
        detector_kwargs=parse_detector_args(args.detector_arg),
        gt_policy=args.gt_policy,
        snap_iou=args.snap_iou,
        seed=args.seed,
        batch_size=args.batch_size,
        on_error=args.on_error,
        allow_outside_root=args.allow_outside_root,
    )
    _print_errors(report.error_lines(), args.out)
    print(report.summary())
    _warn_kept(report.repair, args.gt_policy)
    return 1 if report.errors and args.on_error == "fail" else 0


def _warn_kept(counts, policy: str) -> None:
    warning = counts.kept_warning(policy)
    if warning:
        print(warning)


def _convert(args: argparse.Namespace) -> int:
    from data_tools.convert import ConvertOptions, convert_file
    from rexthinker_rl.data.prompts import load_preset

    preset = load_preset(args.prompt_preset)  # its pixel bounds and box rounding, unless given
    options = ConvertOptions(
        image_root=args.image_root,
        min_pixels=preset.min_pixels if args.min_pixels is None else args.min_pixels,
        max_pixels=preset.max_pixels if args.max_pixels is None else args.max_pixels,
        gt_policy=args.gt_policy,
        snap_iou=args.snap_iou,
        seed=args.seed,
        embed_images=not args.no_embed_images,
        prompt_preset=args.prompt_preset,
        box_rounding=args.box_rounding or preset.box_rounding,
        apply_exif=not args.ignore_exif,
        allow_outside_root=args.allow_outside_root,
    )
    report = convert_file(
        args.anno,
        args.out,
        options,
        on_error=args.on_error,
        num_proc=args.num_proc,
        shard_size=args.shard_size,
        overwrite=args.overwrite,
    )
    _print_errors(report.error_lines(), args.out)
    print(report.summary())
    _warn_kept(report.repair, args.gt_policy)
    if options.box_rounding == "original" and (report.candidates_merged or report.candidates_degenerate):
        print("box rounding 'original': those candidates stay in the hints, as Rex-Thinker's convert leaves them")
    return 1 if report.errors and args.on_error == "fail" else 0


def _repair(args: argparse.Namespace) -> int:
    from data_tools.repair_rows import repair_file

    report = repair_file(
        args.file, args.out, args.gt_policy, args.snap_iou, args.seed, args.prompt_key, args.answer_key
    )
    for change in report.changed[:_MAX_ERROR_LINES]:
        print(f"{Path(args.file).name} row {change['row']}: {change['outcome']}")
    if len(report.changed) > _MAX_ERROR_LINES:
        print(f"... and {len(report.changed) - _MAX_ERROR_LINES} more rows, all listed in the report")
    print(report.summary())
    return 0


def _show_prompt(args: argparse.Namespace) -> int:
    from rexthinker_rl.data.hints import parse_hints
    from rexthinker_rl.data.prompts import load_preset, render_chat
    from rexthinker_rl.data.reserved import check_text

    hints = parse_hints(args.hints, "--hints")  # {category: [[x0, y0, x1, y1], ...]}, 4 finite numbers a box
    for field, text in [("--referring", args.referring), *(("--hints category", name) for name in hints)]:
        if (reason := check_text(field, text)) is not None:
            raise ValueError(reason)
    preset = load_preset(args.preset)
    messages = preset.messages(preset.problem_text(hints, args.referring))
    if args.model:
        from rexthinker_rl.model.loading import load_processor

        processor = load_processor(args.model, preset.min_pixels, preset.max_pixels, False)
        text = processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    else:
        from rexthinker_rl.model.tiny import CHAT_TEMPLATE

        text = render_chat(messages, CHAT_TEMPLATE)
    sys.stdout.write(text)
    return 0


def _humanref_cot(args: argparse.Namespace) -> int:
    from data_tools.humanref_cot import HumanRefCoT, convert, visualise

    if not args.out and not args.vis_dir:
        raise ValueError("humanref-cot: give --out (convert to parquet) and/or --vis-dir (draw samples)")
    inputs = [args.images_tsv, args.annotations_tsv, args.lineidx or ""]
    if args.out:
        check_new_file(args.out, args.overwrite, inputs)
    if args.vis_dir:
        pictures = functools.partial(folder_holds_only, patterns=["humanref_cot_*.png"])
        check_new_folder(args.vis_dir, args.overwrite, pictures, "folder of humanref-cot pictures", "--vis-dir")
    with HumanRefCoT(args.images_tsv, args.annotations_tsv, args.lineidx) as reader:
        if args.vis_dir:
            pictures = visualise(reader, args.vis_dir, args.num_vis, args.seed)
            print(f"humanref-cot: drew {len(pictures)} samples into {args.vis_dir}")
        if not args.out:
            return 0
        report = convert(
            reader, args.out, args.min_pixels, args.max_pixels, args.category, args.on_error, args.max_samples
        )
    name = Path(args.annotations_tsv).name
    _print_errors([f"{name} sample {index}: {reason}" for index, reason in report.errors], args.out)
    print(report.summary())
    return 1 if report.errors and args.on_error == "fail" else 0


def _cot(args: argparse.Namespace) -> int:
    from data_tools.cot import write_cot

    print(write_cot(args.file, args.out, replace=args.replace, overwrite=args.overwrite).summary())
    return 0


def _add_overwrite(parser) -> None:
    parser.add_argument(
        "--overwrite", action="store_true", help="replace an existing output (never an input, never anything else)"
    )


def _add_outside_root(parser) -> None:
    parser.add_argument(
        "--allow-outside-root",
        action="store_true",
        help="read image_name that is absolute or climbs above --image-root with '..' (refused by default)",
    )


def _add_prep_commands(commands, defaults: DataConfig) -> None:
    """from-refcoco, add-candidates, convert, cot, humanref-cot: annotations to training parquet."""
    _add_from_refcoco(commands)
    _add_candidates_command(commands)
    _add_convert_command(commands)
    _add_cot_commands(commands, defaults)


def _add_repair_args(parser, policies, default) -> None:
    """The GT-in-hints repair options add-candidates and convert share."""
    from data_tools.convert import ON_ERROR
    from data_tools.repair import DEFAULT_SNAP_IOU

    parser.add_argument(
        "--gt-policy",
        choices=policies,
        default=default,
        help=f"GT-in-hints: {', '.join(policies)} (docs/data.md; append and keep are Rex-Thinker's own, "
        "and leave ground truth outside the hints, counted)",
    )
    parser.add_argument("--snap-iou", type=float, default=DEFAULT_SNAP_IOU, help="IoU to snap a GT box (snap)")
    parser.add_argument("--seed", type=int, default=0, help="seed of where an inserted GT box goes among hints")
    parser.add_argument("--on-error", choices=ON_ERROR, default="fail", help="bad records: fail (write nothing)")


def _add_from_refcoco(commands) -> None:
    refcoco = commands.add_parser("from-refcoco", help="RefCOCO/+/g refs pickle + instances.json -> interchange JSON")
    refcoco.add_argument("--refs", required=True, help="refs(unc|umd|google).p (read without running any code)")
    refcoco.add_argument("--instances", required=True, help="instances.json of the same dataset (COCO xywh boxes)")
    refcoco.add_argument("--image-root", default=None, help="COCO image folder; images it lacks are listed")
    refcoco.add_argument("--split", default="train", help="train, val, testA, testB, test (as the refs file has)")
    refcoco.add_argument("--out", required=True, help="interchange file to write (.json, or .jsonl)")
    refcoco.add_argument("--max-per-image", type=int, default=0, help="at most this many sentences an image (0: all)")
    refcoco.add_argument("--seed", type=int, default=0, help="seed of the --max-per-image draw and candidate order")
    refcoco.add_argument("--limit", type=int, default=0, help="a seeded sample of at most N records (0: all)")
    _add_overwrite(refcoco)
    refcoco.set_defaults(run=_from_refcoco)


def _add_candidates_command(commands) -> None:
    from data_tools.repair import CANDIDATE_POLICIES

    candidates = commands.add_parser("add-candidates", help="detector box hints for every record, then GT repair")
    candidates.add_argument("--anno", required=True, help="interchange file (.json list or .jsonl)")
    candidates.add_argument("--image-root", required=True, help="folder the records' image_name are relative to")
    candidates.add_argument(
        "--detector",
        required=True,
        help="module:function or file.py:function, e.g. data_tools.detectors:grounding_dino",
    )
    candidates.add_argument(
        "--detector-arg",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="keyword argument of the detector (repeatable), e.g. model_path=/ckpt/gdino-tiny",
    )
    candidates.add_argument("--batch-size", type=int, default=16, help="images per detector call")
    candidates.add_argument("--out", required=True, help="interchange file to write")
    _add_repair_args(candidates, CANDIDATE_POLICIES, "snap")
    _add_outside_root(candidates)
    _add_overwrite(candidates)
    candidates.set_defaults(run=_add_candidates)


def _add_convert_command(commands) -> None:
    from data_tools.convert import CONVERT_POLICIES

    convert = commands.add_parser("convert", help="interchange JSON -> training parquet (resized-frame boxes)")
    convert.add_argument("--anno", required=True, help="interchange file with candidate_boxes")
    convert.add_argument("--image-root", required=True, help="folder the records' image_name are relative to")
    convert.add_argument("--out", required=True, help="parquet file; with --shard-size, a folder of shards")
    _add_frame_arguments(convert)
    convert.add_argument("--num-proc", type=int, default=1, help="worker processes (output does not depend on it)")
    convert.add_argument("--shard-size", type=int, default=0, help="rows per parquet shard (0: one file)")
    convert.add_argument("--no-embed-images", action="store_true", help="store image paths, not bytes")
    convert.add_argument(
        "--ignore-exif",
        action="store_true",
        help="boxes are in the stored frame: keep images as stored, ignoring EXIF orientation (docs/data.md)",
    )
    _add_repair_args(convert, CONVERT_POLICIES, "check")
    _add_outside_root(convert)
    _add_overwrite(convert)
    convert.set_defaults(run=_convert)


def _add_cot_commands(commands, defaults: DataConfig) -> None:
    cot_targets = commands.add_parser("cot", help="templated chain-of-thought SFT targets from hints and answers")
    cot_targets.add_argument("file", help="training parquet file (e.g. convert's output)")
    cot_targets.add_argument("--out", required=True, help="parquet file to write (the input is never changed)")
    cot_targets.add_argument("--replace", action="store_true", help="also replace targets the rows already have")
    _add_overwrite(cot_targets)
    cot_targets.set_defaults(run=_cot)

    cot = commands.add_parser("humanref-cot", help="HumanRef-CoT TSV files -> training parquet and/or pictures")
    cot.add_argument("--images-tsv", required=True, help="humanref_cot.images.tsv (id, base64 image)")
    cot.add_argument("--annotations-tsv", required=True, help="humanref_cot.annotations.tsv (image offset, JSON)")
    cot.add_argument("--lineidx", default=None, help="annotations line index (default: scan the annotations)")
    cot.add_argument("--out", default=None, help="training parquet to write")
    cot.add_argument("--vis-dir", default=None, help="folder for pictures of --num-vis random samples")
    cot.add_argument("--num-vis", type=int, default=20, help="samples to draw")
    cot.add_argument("--seed", type=int, default=0, help="seed of the samples drawn")
    cot.add_argument("--category", default="person", help="category name of the hint boxes")
    cot.add_argument("--min-pixels", type=int, default=defaults.min_pixels)
    cot.add_argument("--max-pixels", type=int, default=defaults.max_pixels)
    cot.add_argument("--max-samples", type=int, default=-1, help="convert the first N samples only")
    cot.add_argument("--on-error", choices=("fail", "skip"), default="fail", help="bad samples: fail (write nothing)")
    _add_overwrite(cot)
    cot.set_defaults(run=_humanref_cot)


def _add_frame_arguments(convert) -> None:
    """``convert``'s prompt preset, box rounding and pixel bounds (the last two default to the preset's)."""
    from rexthinker_rl.data.prompts import BOX_ROUNDINGS, DEFAULT_PRESET

    convert.add_argument("--prompt-preset", "--preset", default=DEFAULT_PRESET, help="preset writing the problem text")
    convert.add_argument("--min-pixels", type=int, default=None, help="default: the preset's (12544 for ours)")
    convert.add_argument("--max-pixels", type=int, default=None, help="default: the preset's (1003520 for ours)")
    convert.add_argument(
        "--box-rounding",
        choices=BOX_ROUNDINGS,
        default=None,
        help="round (ours) | original (Rex-Thinker: int() truncation, clamped to size - 1); default: the preset's",
    )


def _add_fidelity_commands(commands, defaults: DataConfig) -> None:
    """``repair`` (a training set's GT-not-in-hints rows) and ``show-prompt`` (a preset's chat text)."""
    from data_tools.repair import DEFAULT_SNAP_IOU, GT_POLICIES
    from rexthinker_rl.data.prompts import DEFAULT_PRESET

    repair = commands.add_parser("repair", help="fix GT-not-in-hints rows of a training parquet (e.g. Rex-Thinker's)")
    repair.add_argument("file", help="parquet file in the training schema (images, problem, answer)")
    repair.add_argument("--out", required=True, help="parquet file to write (the input is left as it is)")
    repair.add_argument(
        "--gt-policy", choices=GT_POLICIES, default="snap", help="snap, insert or drop (see docs/data.md)"
    )
    repair.add_argument("--snap-iou", type=float, default=DEFAULT_SNAP_IOU, help="IoU to snap a GT box (snap)")
    repair.add_argument("--seed", type=int, default=0, help="seed of where an inserted GT box goes among hints")
    repair.add_argument("--prompt-key", default=defaults.prompt_key)
    repair.add_argument("--answer-key", default=defaults.answer_key)
    repair.set_defaults(run=_repair)

    show = commands.add_parser("show-prompt", help="print exactly the chat text a preset gives the model")
    show.add_argument("--preset", default=DEFAULT_PRESET, help="prompt preset name or .yaml file")
    show.add_argument(
        "--hints", required=True, help="hint JSON in the resized frame, e.g. '{\"person\": [[1, 2, 3, 4]]}'"
    )
    show.add_argument("--referring", required=True, help="the referring expression")
    show.add_argument("--model", default=None, help="use this model folder's chat template (default: Qwen2.5-VL's)")
    show.set_defaults(run=_show_prompt)


def _add_synth(commands) -> None:
    synth = commands.add_parser("synth", help="write a synthetic referring set of coloured shapes")
    synth.add_argument("--out", required=True, help="output folder (train.parquet, val.parquet)")
    synth.add_argument("--num-train", type=int, default=512)
    synth.add_argument("--num-val", type=int, default=64)
    synth.add_argument("--seed", type=int, default=0)
    synth.add_argument("--image-size", type=int, default=_DEFAULT_SIZE, help="side of the square images (pixels)")
    synth.add_argument("--min-pixels", type=int, default=_DEFAULT_SIZE**2)
    synth.add_argument("--max-pixels", type=int, default=_DEFAULT_SIZE**2)
    synth.add_argument("--rejection-fraction", type=float, default=0.15, help="share of rows with no target")
    synth.add_argument("--multi-fraction", type=float, default=0.2, help="share of rows with several targets")
    for flag, default, what in (
        ("--hints", [2, 4], "objects of the referred category per image (the box hints), inclusive"),
        ("--distractors", [0, 2], "objects of other categories per image, inclusive"),
    ):
        synth.add_argument(flag, type=int, nargs=2, default=default, metavar=("MIN", "MAX"), help=what)
    for flag, (choices, what) in SYNTH_CHOICES.items():
        synth.add_argument(flag, choices=choices, default=choices[0], help=what)
    synth.add_argument("--teacher", choices=TEACHERS, default=TEACHERS[0], help=TEACHER_HELP)
    synth.add_argument("--teacher-bias", type=float, default=0.6, help="share of two-hint rows the teacher gets wrong")
    _add_overwrite(synth)
    synth.set_defaults(run=_synth)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rexthinker-data", description="Build and check Rex-Thinker RL datasets.")
    commands = parser.add_subparsers(dest="command", required=True)

    _add_synth(commands)

    defaults = DataConfig()
    validate = commands.add_parser("validate", help="check every row; exit 1 when any is bad")
    validate.add_argument("file", help="parquet file, folder of parquet shards, or JSONL file")
    frame = "; without bounds each row's resized_size column is its frame"
    validate.add_argument("--min-pixels", type=int, default=None, help=f"training's data.min_pixels{frame}")
    validate.add_argument("--max-pixels", type=int, default=None, help=f"training's data.max_pixels{frame}")
    validate.add_argument("--ignore-exif", action="store_true", help="as data.apply_exif_orientation=false")
    validate.add_argument("--image-key", default=defaults.image_key)
    validate.add_argument("--prompt-key", default=defaults.prompt_key)
    validate.add_argument("--answer-key", default=defaults.answer_key)
    validate.set_defaults(run=_validate)
    _add_prep_commands(commands, defaults)
    _add_fidelity_commands(commands, defaults)
    return parser


@console_entry("rexthinker-data")
def main(argv: list[str] | None = None) -> int:
    """Entry point; returns (and, run as a script, exits with) the exit status."""
    args = build_parser().parse_args(argv)
    try:
        with writing(getattr(args, "out", None) or ".", "--out"):  # a full disk: one line naming --out
            status = args.run(args)
    except (DataError, FileNotFoundError, ValueError, pickle.UnpicklingError) as err:
        print(f"error: {err}", file=sys.stderr)
        status = 2
    if argv is None:
        sys.exit(status)
    return status


if __name__ == "__main__":
    main()
