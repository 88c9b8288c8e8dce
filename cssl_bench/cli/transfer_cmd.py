"""``cssl-bench transfer detection RUN_DIR`` (SimSiam Table 5) and ``cssl-bench export RUN_DIR --to FORMAT OUT``."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from cssl_bench import UserError
from cssl_bench.cli.app import JsonOpt, ResultsOpt, app, err, print_records, store

transfer_app = typer.Typer(
    no_args_is_help=True,
    help="""Transfer evaluations: detection fine-tuning (SimSiam Table 5).

Built in (no detectron2 needed): 'cssl-bench transfer detection RUN_DIR --dataset voc07|voc0712|coco|embedded-det'.

With detectron2 (the papers' exact protocol):

  cssl-bench export RUN_DIR --to detectron2 r50.pkl

  python -m cssl_bench.eval.detection.detectron2_train --num-gpus 8 --config-file $(cssl-bench transfer configs)/voc0712_R_50_C4_24k.yaml MODEL.WEIGHTS r50.pkl
""",
)
app.add_typer(transfer_app, name="transfer")


def _parse_opts(opts: list[str]) -> dict:
    import yaml

    out = {}
    for o in opts:
        if "=" not in o:
            raise UserError(f"--opt {o!r} must look like key=value (e.g. roi_batch=128)", exit_code=2)
        k, v = o.split("=", 1)
        try:
            out[k.strip()] = yaml.safe_load(v)
        except yaml.YAMLError:
            raise UserError(f"--opt {o!r}: unreadable value", exit_code=2) from None
    return out


def _sizes(text: Optional[str]) -> Optional[list[int]]:
    if text is None:
        return None
    try:
        sizes = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise UserError(
            f"--min-size {text!r}: expected comma-separated integers, e.g. 480,512,800", exit_code=2
        ) from None
    if not sizes or min(sizes) < 8:
        raise UserError(f"--min-size {text!r}: sizes must be at least 8 px", exit_code=2)
    return sizes


@transfer_app.command("detection")
def detection(
    run_dir: Path = typer.Argument(..., help="a pretraining run directory"),
    dataset: Optional[str] = typer.Option(
        None,
        help="voc07 | voc0712 | coco | embedded-det (default: embedded-det for tiny/small runs, voc07 for paper runs)",
    ),
    arch: str = typer.Option("c4", help="c4 (the papers' R50-C4) | fpn"),
    task: Optional[str] = typer.Option(None, help="box (Faster R-CNN) | instance (Mask R-CNN; default on coco)"),
    protocol: Optional[str] = typer.Option(
        None,
        help="embedded-det only: the paper column it stands in for: voc07 | voc0712 | coco (default: coco for --task instance, else voc07)",
    ),
    iterations: Optional[int] = typer.Option(None, help="training iterations (lr steps keep their fractions)"),
    trials: Optional[int] = typer.Option(None, help="fine-tunings to average (VOC papers: 5)"),
    min_size: Optional[str] = typer.Option(
        None,
        "--min-size",
        help="training short side(s) in px, comma-separated, one drawn per image (e.g. 480,512,...,800)",
    ),
    max_size: Optional[int] = typer.Option(None, "--max-size", help="longest side in px"),
    test_size: Optional[int] = typer.Option(
        None, "--test-size", help="evaluation short side in px (default: the largest --min-size)"
    ),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", help="images per step (all processes together)"),
    lr: Optional[float] = typer.Option(None, help="learning rate for batch 16 (scaled by batch/16)"),
    opts: list[str] = typer.Option(
        [], "--opt", help="any protocol field, key=value, repeatable (e.g. --opt roi_batch=128 --opt precise_bn=0)"
    ),
    scratch: bool = typer.Option(
        False, "--scratch", help="random-init backbone of the run's architecture (recorded as method 'scratch')"
    ),
    epoch: Optional[int] = typer.Option(None, help="use the checkpoint kept at this epoch instead of the last"),
    data_root: Optional[Path] = typer.Option(
        None,
        "--data-root",
        help="folder holding VOC2007/, VOC2012/ (or VOCdevkit/) and coco/ (default: $DETECTRON2_DATASETS or ./datasets)",
    ),
    device: Optional[str] = typer.Option(None, help="cpu | cuda (default: cuda when available)"),
    quiet: bool = typer.Option(False, help="no progress lines"),
    results: Optional[Path] = ResultsOpt,
    as_json: bool = JsonOpt,
):
    """Fine-tune Faster R-CNN / Mask R-CNN (torchvision) on the run's backbone and score it (VOC: detectron2's VOC2007 11-point AP; COCO: pycocotools).

    Trainable BN (SyncBN across GPUs), no frozen stage, explicit image sizes. Records voc07/*, voc0712/* or coco/* (ap50, ap, ap75; with --task instance also ap_mask50, ap_mask, ap_mask75), each the mean over --trials.
    """
    import torch

    from cssl_bench.eval.detection.finetune import DATASETS, get_protocol, transfer_detection
    from cssl_bench.eval.detection.models import ARCHS, TASKS
    from cssl_bench.eval.features import load_run
    from cssl_bench.train.distributed import cleanup, init_from_env, is_main

    if device not in (None, "cpu", "cuda"):
        raise UserError(f"unknown --device {device!r}; choose from cpu, cuda", exit_code=2)
    if device == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda: no CUDA device is available")
    if arch not in ARCHS:
        raise UserError(f"unknown --arch {arch!r}; choose from {', '.join(ARCHS)}", exit_code=2)
    if task is not None and task not in TASKS:
        raise UserError(f"unknown --task {task!r}; choose from {', '.join(TASKS)}", exit_code=2)
    if dataset is not None and dataset not in DATASETS:
        raise UserError(f"unknown detection dataset {dataset!r}; choose from {', '.join(DATASETS)}", exit_code=2)
    overrides = dict(
        arch=arch,
        iterations=iterations,
        trials=trials,
        min_size=_sizes(min_size),
        max_size=max_size,
        test_size=test_size,
        batch_size=batch_size,
        lr=lr,
        **_parse_opts(opts),
    )
    st = store(results, writable=True)  # before the run loads and the data is built
    run = load_run(run_dir, epoch)
    dataset = dataset or ("voc07" if run.recipe.scale == "paper" else "embedded-det")
    p = get_protocol(dataset, protocol, task).with_overrides(
        **overrides
    )  # every option (types and ranges) checked before any work
    init_from_env()  # under torchrun: one process per GPU (or CPU), BN synchronised over all of them
    main = is_main()  # asked before cleanup() leaves the process group
    dev = torch.device("cpu") if device == "cpu" else None
    log = None if quiet or not main else (lambda s: err.print(s, markup=False, highlight=False))
    try:
        recs, trials_done = transfer_detection(run, dataset, p, scratch, data_root, dev, log)
    except BaseException:
        cleanup(barrier=False)
        raise
    cleanup()
    if not main:
        return
    st.append(recs)
    if not as_json:
        err.print(f"{len(trials_done)} trial(s), {sum(t.seconds for t in trials_done):.0f} s")
    print_records(recs, as_json, f"detection transfer ({dataset} as {p.name}, {p.arch}, {p.task})")


@transfer_app.command("configs")
def configs():
    """Print the folder of the shipped detectron2 configs (VOC07, VOC07+12 R50-C4; COCO Mask R-CNN R50-C4 1x)."""
    from cssl_bench.eval.detection import CONFIG_DIR

    for f in sorted(CONFIG_DIR.glob("*.yaml")):
        err.print(f.name, markup=False)
    print(CONFIG_DIR)


@app.command("export")
def export(
    run_dir: Path = typer.Argument(..., help="a pretraining run directory"),
    out: Path = typer.Argument(..., help="output file"),
    to: str = typer.Option(..., "--to", help="torchvision | timm | detectron2"),
    epoch: Optional[int] = typer.Option(None, help="export the checkpoint kept at this epoch instead of the last"),
):
    """Write the run's backbone for torchvision (strict-loading ResNet state dict), timm, or detectron2 (pickle).

    detectron2 users then run: python -m cssl_bench.eval.detection.detectron2_train --num-gpus 8 --config-file $(cssl-bench transfer configs)/voc0712_R_50_C4_24k.yaml MODEL.WEIGHTS OUT
    """
    from cssl_bench.export import export_run

    e = export_run(run_dir, to, out, epoch)  # format and target folder checked before the run is loaded
    for n in e.notes:
        err.print(f"note: {n}", markup=False, highlight=False)
    err.print(f"wrote {e.n_tensors} tensors ({e.fmt})")
    print(e.path)
