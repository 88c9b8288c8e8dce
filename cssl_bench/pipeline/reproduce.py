"""``cssl-bench reproduce``: every pre-training and probe a paper table needs, then the table.

The plan is derived from the table specs (``tables.py``): each row names a run of the catalogue below
and a feature, each metric column a probe (by its metric's prefix), a dataset role and an epoch
budget. Probes are deduplicated (at the CPU scales iNat-1k and CUB-200 share the stand-in
``embedded-fine``, so one fine-grained probe serves both columns), and runs are deduplicated by
recipe hash, so a run shared by several tables is made once: one MoCo run serves LooC Tables 1-3, one
run per method with checkpoints kept at every epoch budget (``train.save_epochs``) serves all epoch
columns of SimSiam Table 4 and the 200-epoch column of Table 5. Every catalogue run has the same
recipe whichever tables asked for it, so ``reproduce rotation`` followed by ``reproduce all`` reuses.

A probe is skipped when the store already holds its records (same config hash, checkpoint epoch,
dataset, feature, metric prefix and protocol); a pre-training is skipped when none of its probes is
left, reused when its run directory is complete, and resumed when it is partial. Each probe's records
are appended as soon as it finishes, so a killed ``reproduce`` continues where it stopped.
Everything runs through the library functions (``train.loop.pretrain``, the probes of ``eval.probes``, the
detection transfer), never by shelling out: in this process, or with ``execute(jobs=N)`` (``--jobs``) N runs at
once, each with its probes in a spawned worker process of ``cores / N`` torch threads.

Random-init baselines (``plan(baseline=True)``; ``cssl-bench reproduce`` asks for them unless ``--no-baseline``
or unless only ``--add`` rows are planned, which run only what their rows need, where ``--baseline`` asks): for
every table with at least one planned row (all, those of ``--rows`` or of ``--add``) and a non-detection column,
per seed, one epoch-0 run (catalogue key ``random-init``, or ``random-init-in1k`` for the SimSiam tables: the
``supervised`` recipe at the scale with 0 epochs, nothing trained, on the table's pre-training dataset; one run at
the CPU scales, where both roles are ``embedded``) and, for each distinct metric column that probes a frozen
backbone (every probe but detection: SimSiam Table 5 has its scratch row), two probes of its backbone features:
as initialised (``ProbeStep.bn`` ``"init"``) and with the backbone's BN statistics re-estimated on the train split
of the run's pre-training dataset (``"data"``, ``eval.baseline.reestimate_bn``; records with ``init_bn: "data"``).
Their records carry ``epochs: 0``, the keys ``tables.random_init_baselines`` selects on. A dedicated run rather than
another run's epoch-0 checkpoint (SimSiam Table 5's scratch row is the supervised run's): it costs no training, and
every table and ``--rows`` subset then shares one baseline configuration.

``--add METHOD`` (``plan(add=...)``) plans the row of a method of one's own (a plugin, or a built-in method in
another table): the catalogue gives it the run a row of the table's own methods gets (``added[METHOD]``: as
SimCLR in the SimSiam tables; ``added-looc[METHOD]``: as MoCo in the LooC tables) with the method's recipe at the
scale, and the probes its columns need. Only those are planned (and the ``--rows`` given, if any).
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
import itertools
import json
import os
import shlex
import time
from dataclasses import dataclass, field
from pathlib import Path

from cssl_bench import UserError
from cssl_bench.results import tables as T

# --- the run catalogue -----------------------------------------------------------------------------


@dataclass(frozen=True)
class RunSpec:
    """One pre-training: ``method`` (a recipe) at the scale's settings plus these overrides."""

    key: str
    method: str
    epochs: int
    save_epochs: tuple[int, ...] = ()
    role: str = "in100"  # the pre-training dataset's role (SimSiam: ImageNet; LooC: IN-100)
    augment: tuple[str, ...] | None = None  # LooC's atomic augmentations (augment.looc_augment)
    heads: tuple[str, ...] | None = None  # LooC's variance heads (augment.looc_heads; None: one per augmentation)
    sets: tuple[str, ...] = ()  # further section.key=value overrides


SSL_METHODS = ("simclr", "byol", "swav", "simsiam")  # SimSiam Table 4 rows, pre-trained on ImageNet
# The random-init baselines' run: this recipe's network at epoch 0 (the scratch row of SimSiam Table 5 is the
# supervised run's epoch-0 checkpoint too); keys per pre-training role, as supervised / supervised-in1k.
RANDOM_INIT_RECIPE = "supervised"
RANDOM_INIT_KEYS = {"in100": "random-init", "in1k": "random-init-in1k"}


def run_spec(key: str, scale: str) -> RunSpec:
    """The catalogue: the same key gives the same recipe whichever table asks for it."""
    b = T.EPOCH_BUDGETS[scale]
    looc = T.LOOC_EPOCHS[scale]
    top = b[800]
    saves = tuple(sorted({b[100], b[200], b[400]} - {top}))
    if key in SSL_METHODS:
        return RunSpec(key, key, top, saves, role="in1k")
    if key == "moco-v2-sym":  # SimSiam's MoCo v2 reproduction uses the symmetrised loss (docs/protocols.md, section 1)
        # (the reduction is spelled out: runs made before the official sum became the default halved it, and the
        # explicit key gives this run a new config hash so that those are not reused)
        return RunSpec(
            key, "moco-v2", top, saves, role="in1k", sets=("params.symmetric=true", "params.symmetric_reduction=sum")
        )
    if key == "simsiam-optimal":  # only SimSiam Table 5 needs it: 200-epoch pre-training
        return RunSpec(key, "simsiam-optimal", b[200], role="in1k")
    if key in ("supervised", "supervised-in1k"):
        # LooC Tables 1, 3 (IN-100) and SimSiam Table 5 (ImageNet; its 200-epoch checkpoint, and epoch 0 = scratch).
        # At the CPU scales both roles are `embedded`, so the two keys are one run.
        epochs = max(looc, b[200])
        return RunSpec(
            key,
            "supervised",
            epochs,
            tuple(sorted({0, b[200]} - {epochs})),
            role="in1k" if key.endswith("in1k") else "in100",
        )
    if key in ("moco-v2", "moco-rot", "moco-rot-same"):
        return RunSpec(key, key, looc)
    if key in RANDOM_INIT_KEYS.values():  # the random-init baselines: nothing trained (see the module docstring)
        return RunSpec(key, RANDOM_INIT_RECIPE, 0, role=next(r for r, k in RANDOM_INIT_KEYS.items() if k == key))
    for prefix, looc_table in (("added[", False), ("added-looc[", True)):  # rows of one's own (tables.added_run_key)
        if key.startswith(prefix) and key.endswith("]") and len(key) > len(prefix) + 1:
            method = key[len(prefix) : -1]
            return RunSpec(key, method, looc) if looc_table else RunSpec(key, method, top, saves, role="in1k")
    if key.startswith("looc[") and key.endswith("]"):
        # looc[a,b] : augmentations a, b, a variance head for each; looc[a,b,c;heads=a] : only a gets one
        body, sep, heads = key[5:-1].partition(";heads=")
        augment = tuple(a for a in body.split(",") if a)
        return RunSpec(
            key, "looc", looc, augment=augment, heads=tuple(h for h in heads.split(",") if h) if sep else None
        )
    raise UserError(f"no catalogue run {key!r}")


def recipe_of(spec: RunSpec, scale: str, seed: int, sets: tuple[str, ...] = ()):
    """The recipe of catalogue run ``spec``; ``sets``: the user's overrides, applied to every run (they change its hash)."""
    from cssl_bench.config import load_recipe

    ov: dict = {
        "train": {"epochs": spec.epochs, "save_epochs": list(spec.save_epochs), "seed": seed},
        "data": {"dataset": T.stand_in(spec.role, scale)},
    }
    if spec.augment is not None:
        ov["augment"] = {"looc_augment": list(spec.augment)}
    if spec.heads is not None:
        ov.setdefault("augment", {})["looc_heads"] = list(spec.heads)
    return load_recipe(spec.method, scale, ov, list(spec.sets) + list(sets))


def config_family(recipe) -> str:
    """The recipe hash without its seed: runs of one configuration under several seeds share it."""
    d = recipe.hash_dict(with_seed=False)
    return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:12]


def _slug(key: str) -> str:
    return key.replace("[", "-").replace("]", "").replace(",", "-").replace("+", "p").rstrip("-")


# --- probes ------------------------------------------------------------------------------------------
# kind -> (module, function). The evaluation and detection issues provide them; a missing one is
# reported before anything runs.
PROBE_FUNCTIONS = {
    "linear": ("cssl_bench.eval.probes", "probe_linear"),
    "knn": ("cssl_bench.eval.probes", "probe_knn"),
    "rotation": ("cssl_bench.eval.probes", "probe_rotation"),
    "finegrained": ("cssl_bench.eval.probes", "probe_finegrained"),
    "fewshot": ("cssl_bench.eval.probes", "probe_fewshot"),
    "corruption": ("cssl_bench.eval.probes", "probe_corruption"),
    "objectnet": ("cssl_bench.eval.probes", "probe_objectnet"),
    "detection": ("cssl_bench.eval.detection.finetune", "transfer_detection"),
}
# The linear protocol of the classifier behind the LooC tables' probes (rotation, fine-grained, corruption,
# ObjectNet), as `evaluate --suite looc` uses it.
LOOC_PROTOCOL = "looc"


def metric_prefixes(kind: str, protocol: str | None = None) -> tuple[str, ...]:
    """The metric names a probe writes start with these; detection writes ``voc07/``, ``voc0712/`` or ``coco/``."""
    if kind == "detection":
        return (f"{protocol}/",) if protocol else ("voc07/", "voc0712/", "coco/")
    return (f"{kind}/",)


def probe_function(kind: str):
    """The library function of probe ``kind``; a UserError naming it when this version lacks it."""
    mod_name, fn_name = PROBE_FUNCTIONS[kind]
    try:
        mod = importlib.import_module(mod_name)
    except ImportError as e:
        raise UserError(f"probe '{kind}' is not available in this version ({mod_name} does not import: {e})") from None
    try:
        return getattr(mod, fn_name)
    except (AttributeError, ImportError):  # a lazily imported probe module may be missing too
        raise UserError(f"probe '{kind}' is not available in this version ({mod_name}.{fn_name} is missing)") from None


def _call(fn, run, dataset: str, *args, **kw) -> list[dict]:
    """Call a probe with the keyword options it accepts; probes return records or (records, extra)."""
    params = inspect.signature(fn).parameters
    if not any(p.kind is p.VAR_KEYWORD for p in params.values()):
        kw = {k: v for k, v in kw.items() if k in params}
    out = fn(run, dataset, *args, **kw)
    return list(out[0] if isinstance(out, tuple) else out)


def linear_protocol(name: str | None, scale: str):
    """The named linear protocol as ``reproduce`` runs it, the `probe linear` default at that scale
    (``LinearProtocol.for_scale``)."""
    from cssl_bench.eval.linear import get_protocol

    return get_protocol(name or "moco").for_scale(scale)


def run_probe(kind: str, run, dataset: str, feature: str, protocol: str | None, scale: str, log=None) -> list[dict]:
    """Run one probe in-process with the options ``evaluate`` / ``transfer detection`` use by default, plus
    the scale's ``PROBE_OPTIONS``."""
    fn = probe_function(kind)
    extra = PROBE_OPTIONS.get(scale, {}).get(kind, {})
    if kind == "linear":
        return _call(fn, run, dataset, protocol=linear_protocol(protocol, scale), feature=feature)
    if kind == "detection":
        from cssl_bench.eval.detection.finetune import get_protocol as detection_protocol

        # embedded-det stands in for every column group: `protocol` names the one (voc07, voc0712, coco).
        p = detection_protocol(dataset, protocol if dataset == "embedded-det" else None)
        return _call(fn, run, dataset, p, log=log)
    if kind in ("rotation", "finegrained", "corruption", "objectnet"):
        return _call(fn, run, dataset, protocol=LOOC_PROTOCOL, feature=feature, **extra)
    return _call(fn, run, dataset, feature=feature, **extra)


# --- the plan -----------------------------------------------------------------------------------------


@dataclass(eq=False)  # identity: one object per run, shared by its probes
class RunStep:
    keys: list[str]
    spec: RunSpec
    seed: int
    recipe: object | None
    error: str | None
    run_dir: Path
    sets: tuple[str, ...] = ()
    status: str = "run"  # run | resume | reuse | skip (every probe already in the store) | unavailable
    epochs_done: int = 0

    @property
    def label(self) -> str:
        return f"{'='.join(self.keys)} seed {self.seed}"

    def command(self, scale: str) -> str:
        s = self.spec
        parts = [
            "cssl-bench",
            "pretrain",
            s.method,
            "--scale",
            scale,
            "--epochs",
            str(s.epochs),
            "--seed",
            str(self.seed),
        ]
        if s.save_epochs:
            parts += ["--save-epochs", ",".join(map(str, s.save_epochs))]
        if s.augment is not None:
            parts += ["--augment", ",".join(s.augment)]
        if s.heads is not None:
            parts += ["--variance-heads", ",".join(s.heads) or "none"]
        if self.recipe is not None and T.stand_in(s.role, scale) != "embedded":
            parts += ["--dataset", T.stand_in(s.role, scale)]
        for x in s.sets + self.sets:
            parts += ["--set", x]
        plugin = getattr(self.recipe, "plugin", None) or {}
        if plugin.get("kind") == "file":
            parts += ["--method-file", str(plugin.get("path"))]
        if plugin.get("recipe_option"):
            parts += ["--recipe", str(plugin.get("recipe_file"))]
        parts += ["--out", str(self.run_dir)]
        return shlex.join(parts)


@dataclass(eq=False)
class ProbeStep:
    run: RunStep
    kind: str
    dataset: str
    feature: str
    epoch: int
    protocol: str | None
    tables: list[str] = field(default_factory=list)
    status: str = "run"  # run | done | unavailable
    # A random-init baseline's BN statistics: None (any other probe: the checkpoint's own), "init" (as
    # initialised, the checkpoint's own too) or "data" (re-estimated on ``bn_dataset``'s train split).
    bn: str | None = None

    @property
    def checkpoint_epoch(self) -> int | None:
        """None: the run's last checkpoint."""
        return None if self.epoch == self.run.spec.epochs else self.epoch

    @property
    def bn_dataset(self) -> str:
        """Where ``bn == "data"`` re-estimates the BN statistics: the run's pre-training dataset (its train split)."""
        if self.run.recipe is not None:
            return self.run.recipe.data.dataset
        return self.dataset

    def describe(self) -> str:
        proto = f" ({self.protocol} protocol)" if self.protocol else ""
        if self.kind == "detection":
            proto = f" (as {self.protocol})" if self.protocol and self.dataset == "embedded-det" else ""
        bn = {None: "", "init": ", BN as initialised", "data": f", BN re-estimated on {self.bn_dataset} train"}[self.bn]
        return f"probe {self.kind}{proto} {self.run.label} epoch {self.epoch} on {self.dataset} [{self.feature}]{bn}"

    def command(self) -> str:
        ep = [] if self.checkpoint_epoch is None else ["--epoch", str(self.epoch)]
        if self.kind == "detection":
            as_ = ["--protocol", self.protocol] if self.protocol and self.dataset == "embedded-det" else []
            return shlex.join(
                ["cssl-bench", "transfer", "detection", str(self.run.run_dir), "--dataset", self.dataset, *as_, *ep]
            )
        parts = [
            "cssl-bench",
            "probe",
            self.kind,
            str(self.run.run_dir),
            "--dataset",
            self.dataset,
            "--feature",
            self.feature,
            *ep,
        ]
        if self.protocol:
            parts += ["--protocol", self.protocol]
        elif self.kind in ("rotation", "finegrained", "corruption", "objectnet"):
            parts += ["--protocol", LOOC_PROTOCOL]
        for k, v in (
            PROBE_OPTIONS.get(self.run.recipe.scale if self.run.recipe else "paper", {}).get(self.kind, {}).items()
        ):
            parts += [f"--{k}", str(v)]
        if self.bn != "data":
            return shlex.join(parts)
        if self.kind in ("knn", "linear") and self.dataset == self.bn_dataset:  # --bn-data: on the probed dataset's
            return shlex.join([*parts, "--bn-data"])
        # no command-line equivalent: the command probes as initialised; the comment says what reproduce did
        return (
            shlex.join(parts)
            + f"  # with BN statistics re-estimated on {self.bn_dataset}'s train split (eval.baseline.reestimate_bn)"
        )

    def done_in(self, records: list[dict]) -> bool:
        r = self.run.recipe
        if r is None:
            return False
        h = r.hash()
        prefixes = metric_prefixes(self.kind, self.protocol)
        for rec in records:
            if (
                rec.get("config_hash") == h
                and rec.get("epochs") == self.epoch
                and rec.get("dataset") == self.dataset
                # a probe of the copy with re-estimated BN statistics is another measurement
                and T.bn_on_data(rec) == (self.bn == "data")
                and (
                    self.bn != "data"
                    or (rec.get("bn_estimate") or {}).get("dataset", self.bn_dataset) == self.bn_dataset
                )
                and str(rec.get("metric", "")).startswith(prefixes)
                and (self.kind == "detection" or rec.get("feature") == self.feature)
                and (self.kind != "linear" or rec.get("protocol") == linear_protocol(self.protocol, r.scale).record())
                and (self.kind != "detection" or self._scored_as_planned(rec))
            ):
                return True
        return False

    def _scored_as_planned(self, rec: dict) -> bool:
        """A detection record counts only if scored the way this step would score it (VOC07 or COCO)."""
        from cssl_bench.eval.detection.finetune import get_protocol

        return (
            T.record_metric(rec)
            == get_protocol(self.dataset, self.protocol if self.dataset == "embedded-det" else None).metric
        )


@dataclass
class Plan:
    tables: list[str]
    scale: str
    runs: list[RunStep]
    probes: list[ProbeStep]
    results: Path
    runs_dir: Path

    def describe(self) -> list[str]:
        """One line per step, in execution order: pre-trainings, each followed by its probes."""
        out = []
        for r in self.runs:
            s = r.spec
            extra = f", checkpoints at {','.join(map(str, s.save_epochs))}" if s.save_epochs else ""
            extra += f", augment {','.join(s.augment) or '(none)'}" if s.augment is not None else ""
            extra += f", variance heads {','.join(s.heads) or '(none)'}" if s.heads is not None else ""
            out.append(f"pretrain {r.label}: {s.method} {s.epochs} epochs{extra} [{r.status}]")
            out += [f"  {p.describe()} [{p.status}]" for p in self.probes if p.run is r]
        return out

    @property
    def todo_runs(self) -> list[RunStep]:
        """Pre-trainings still to run (including those whose recipe this version lacks)."""
        return [r for r in self.runs if r.status in ("run", "resume", "unavailable")]

    @property
    def todo_probes(self) -> list[ProbeStep]:
        return [p for p in self.probes if p.status in ("run", "unavailable")]

    def datasets(self) -> dict[str, list[str]]:
        """Dataset -> what needs it (pre-training, probe kinds)."""
        need: dict[str, list[str]] = {}
        for r in self.runs:
            need.setdefault(T.stand_in(r.spec.role, self.scale), []).append("pre-training")
        for p in self.probes:
            need.setdefault(p.dataset, []).append(p.kind)
        return {k: sorted(set(v)) for k, v in need.items()}

    def missing_probes(self) -> dict[str, str]:
        out = {}
        for kind in sorted({p.kind for p in self.todo_probes}):
            try:
                probe_function(kind)
            except UserError as e:
                out[kind] = str(e)
        return out

    def minutes(self) -> float | None:
        return estimate_minutes(self)


def plan(
    names: list[str],
    scale: str,
    seeds: int = 1,
    results: Path | None = None,
    runs_dir: Path | None = None,
    rows: list[int] | None = None,
    sets: list[str] | None = None,
    add: list[str] | tuple[str, ...] = (),
    method_file: Path | None = None,
    recipe_file: Path | None = None,
    baseline: bool = False,
) -> Plan:
    """The steps that reproduce tables ``names`` at ``scale`` (``rows``: 1-based rows of a single table;
    ``sets``: ``section.key=value`` overrides for every pre-training, e.g. ``data.workers=0``). ``add``: methods of
    one's own whose rows (``tables.method_row``) are planned instead of the paper's rows (with ``rows``: as well as
    those); ``method_file`` / ``recipe_file``: the plugin file and recipe of the one method of ``add``.
    ``baseline``: also the random-init baselines of every table with a planned row (``baseline_steps``), after
    that table's rows' runs; per seed one epoch-0 run and two probes (BN as initialised, BN on data) per distinct
    non-detection column probe."""
    from cssl_bench.results.store import ResultsStore

    if scale not in T.SCALES:
        raise UserError(f"unknown scale {scale!r}; choose from {', '.join(T.SCALES)}", exit_code=2)
    if seeds < 1:
        raise UserError(f"--seeds must be at least 1, got {seeds}", exit_code=2)
    specs = [T.resolve(n) for n in names]
    if rows is not None:
        if len(specs) != 1:
            raise UserError("--rows needs a single table", exit_code=2)
        bad = [i for i in rows if not 1 <= i <= len(specs[0].rows)]
        if bad:
            raise UserError(f"table {specs[0].name} has rows 1..{len(specs[0].rows)}; got {bad[0]}", exit_code=2)
    prepare_added(list(add), method_file, recipe_file)
    store = ResultsStore(results)
    records = store.read()
    runs_dir = Path(runs_dir or "runs")
    by_id: dict[tuple, RunStep] = {}
    probes: dict[tuple, ProbeStep] = {}
    for spec in specs:
        # the paper's rows (those of --rows; none when only --add is given), then the added methods' rows
        planned = [row for i, row in enumerate(spec.rows, 1) if (i in rows if rows is not None else not add)]
        for row in planned + [T.method_row(spec, m) for m in add]:
            for seed in range(seeds):
                step = _run_step(row.run, scale, seed, runs_dir, by_id, tuple(sets or ()))
                for _h, cell in T.columns(spec):
                    if cell is None:
                        continue
                    epoch = row.epoch if row.epoch is not None else T.our_epochs(cell.budget, scale)
                    protocol = dict(cell.where + cell.prefer).get("protocol.name") if cell.probe == "linear" else None
                    if cell.probe == "detection":
                        protocol = (
                            cell.role
                        )  # voc07 | voc0712 | coco: on embedded-det, the column group it stands in for
                    feature = "backbone" if cell.probe == "detection" else row.feature
                    key = (id(step), cell.probe, T.stand_in(cell.role, scale), feature, epoch, protocol, None)
                    if key not in probes:
                        probes[key] = ProbeStep(
                            step, cell.probe, T.stand_in(cell.role, scale), feature, epoch, protocol
                        )
                    if spec.name not in probes[key].tables:
                        probes[key].tables.append(spec.name)
        wanted = baseline_probes(spec, scale) if baseline and (planned or add) else []
        for seed in range(seeds if wanted else 0):  # SimSiam Table 5 (detection only) has none
            step = _run_step(baseline_run_key(spec, scale), scale, seed, runs_dir, by_id, tuple(sets or ()))
            for kind, dataset, protocol in wanted:
                for bn in ("init", "data"):
                    key = (id(step), kind, dataset, "backbone", 0, protocol, bn)
                    if key not in probes:
                        probes[key] = ProbeStep(step, kind, dataset, "backbone", 0, protocol, bn=bn)
                    if spec.name not in probes[key].tables:
                        probes[key].tables.append(spec.name)
    run_steps = list(dict.fromkeys(by_id.values()))
    probe_steps = [p for r in run_steps for p in probes.values() if p.run is r]
    for p in probe_steps:
        if p.run.error:
            p.status = "unavailable"
        elif p.done_in(records):
            p.status = "done"
    for r in run_steps:
        _set_run_status(r, [p for p in probe_steps if p.run is r])
    return Plan([s.name for s in specs], scale, run_steps, probe_steps, store.root, runs_dir)


def baseline_run_key(spec: T.TableSpec, scale: str) -> str:
    """The catalogue key of table ``spec``'s random-init run: that of the pre-training dataset role of its
    first row's run (``random-init-in1k`` for the SimSiam tables, ``random-init`` for LooC's)."""
    return RANDOM_INIT_KEYS[run_spec(spec.rows[0].run, scale).role]


def baseline_probes(spec: T.TableSpec, scale: str) -> list[tuple[str, str, str | None]]:
    """(probe kind, dataset, linear protocol) of each distinct metric column of ``spec`` whose value is a probe of
    a frozen backbone, in column order: every probe but detection (fine-tuned; SimSiam Table 5 has its scratch row)."""
    out = []
    for _h, cell in T.columns(spec):
        if not T.has_random_init_baseline(cell):
            continue
        protocol = dict(cell.where + cell.prefer).get("protocol.name") if cell.probe == "linear" else None
        key = (cell.probe, T.stand_in(cell.role, scale), protocol)
        if key not in out:
            out.append(key)
    return out


def prepare_added(add: list[str], method_file: Path | None = None, recipe_file: Path | None = None) -> None:
    """Check and load the methods of ``--add`` before planning (a plugin's recipe is registered for
    ``load_recipe``): an unknown name, a broken plugin or a run directory is a one-line error (exit 2)."""
    if (method_file is not None or recipe_file is not None) and len(add) != 1:
        raise UserError("--method-file and --recipe name the method of exactly one --add METHOD", exit_code=2)
    if len(set(add)) != len(add):
        raise UserError(f"--add lists a method twice: {', '.join(add)}", exit_code=2)
    from cssl_bench.methods.plugins import use_method

    for m in add:
        if "/" in m or Path(m).is_dir():
            raise UserError(
                f"reproduce --add takes a method name, not a run ({m}); show a run's row with 'cssl-bench table NAME "
                f"--add RUN_DIR'",
                exit_code=2,
            )
        use_method(m, method_file, recipe_file)


def _run_step(key: str, scale: str, seed: int, runs_dir: Path, by_id: dict, sets: tuple[str, ...] = ()) -> RunStep:
    spec = run_spec(key, scale)
    # The recipe is a function of these (two catalogue keys may give one recipe at the CPU scales).
    ident = (
        spec.method,
        spec.epochs,
        spec.save_epochs,
        T.stand_in(spec.role, scale),
        spec.augment,
        spec.heads,
        spec.sets,
        seed,
        sets,
    )
    try:
        recipe, error = recipe_of(spec, scale, seed, sets), None
        _check_buildable(recipe)
    except UserError as e:  # a recipe or model this version lacks or refuses: shown in the plan, skipped when running
        if key.startswith("added"):  # ... but a method of one's own that cannot be built is the user's to fix
            raise UserError(f"{e} (the row of --add {spec.method})", exit_code=2) from None
        recipe, error = None, str(e)
        if sets:  # ... unless the user's overrides are what it refuses: their mistake, not this version's gap
            try:
                _check_buildable(recipe_of(spec, scale, seed, ()))
            except UserError:
                pass
            else:
                raise UserError(f"--set {' '.join(sets)}: {error} (run {key})", exit_code=2) from None
    if ident in by_id:
        step = by_id[ident]
        if key not in step.keys:
            step.keys.append(key)
        return step
    # Named by recipe, not catalogue key: two keys with one recipe (supervised, supervised-in1k at the CPU scales) share a folder.
    what = spec.method + (f"[{','.join(spec.augment) or 'none'}]" if spec.augment is not None else "")
    if spec.epochs == 0:  # a random-init run
        what = f"init-{what}"
    if spec.heads is not None:
        what += f"-heads-{'-'.join(spec.heads) or 'none'}"
    name = f"{_slug(what)}-{scale}-{recipe.hash() if recipe else 'norecipe'}-s{seed}"
    step = RunStep([key], spec, seed, recipe, error, runs_dir / name, sets, status="unavailable" if error else "run")
    by_id[ident] = step
    return step


def _check_buildable(recipe) -> None:
    """Build the recipe's model once (no data): a configuration the method refuses is found before any run starts."""
    from cssl_bench.methods import build_method

    build_method(recipe)


def _read_run_json(run_dir: Path) -> dict:
    try:
        return json.loads((run_dir / "run.json").read_text())
    except (OSError, ValueError):
        return {}


def _set_run_status(r: RunStep, probes: list[ProbeStep]) -> None:
    if r.error:
        r.status = "unavailable"
        return
    info = _read_run_json(r.run_dir)
    complete = info.get("status") == "complete" and info.get("config_hash") == r.recipe.hash()
    r.epochs_done = int(info.get("epochs_done", 0)) if info.get("config_hash") == r.recipe.hash() else 0
    if not any(p.status == "run" for p in probes):
        r.status = "skip"
    elif complete:
        r.status = "reuse"
    elif (r.run_dir / "config.yaml").exists():
        r.status = "resume"
    else:
        r.status = "run"


# --- cost estimate (2 CPU cores) --------------------------------------------------------------------
# Measured with torch's CPU path pinned to 2 cores of an idle Xeon (taskset -c 0,1, 2 threads; 2026-11):
# minutes per pre-training epoch of the CPU scales (10,000 embedded images at 32 px, ResNet-18 at
# quarter width, batch 128), and minutes per probe on 10,000 + 2,000 images.
EPOCH_MINUTES = {
    "moco-v1": 0.7,
    "moco-v2": 0.7,
    "moco-rot": 0.7,
    "moco-rot-same": 0.7,
    "simclr": 0.6,
    "byol": 0.72,
    "simsiam": 0.6,
    "simsiam-optimal": 0.6,
    "swav": 1.07,
    "supervised": 0.25,
}
SYMMETRIC_EPOCH_MINUTES = 1.03  # MoCo v2 with the symmetrised loss
LOOC_EPOCH_MINUTES = (0.47, 0.34)  # LooC: base + per atomic augmentation (one more key view each)
PROBE_MINUTES = {
    "linear": 0.15,
    "knn": 0.1,
    "rotation": 0.25,
    "finegrained": 0.15,
    "fewshot": 0.1,
    "corruption": 0.7,
    "objectnet": 0.1,
    "detection": 1.3,
}
# The corrupted test images are rendered once and cached for every run (glass blur dominates): ~19
# CPU-minutes for 2,000 images x 15 corruptions x 5 severities, proportionally less for a subset.
CORRUPTION_RENDER_MINUTES_PER_IMAGE = 19.0 / 2000
# Seeded subsets at the CPU scales, to fit the budgets: rotation (4 angles of every image) and
# corruption (75 corrupted copies of the test split). Recorded in the probes' protocols.
PROBE_OPTIONS = {
    "tiny": {"rotation": {"limit": 2000}, "corruption": {"limit": 500}},
    "small": {"corruption": {"limit": 1000}},
    "paper": {},
}
CPU_SCALES = ("tiny", "small")


def epoch_minutes(spec: RunSpec) -> float:
    if spec.method == "looc":
        n_views = len(spec.augment or ()) if spec.heads is None else len(spec.heads)
        return LOOC_EPOCH_MINUTES[0] + LOOC_EPOCH_MINUTES[1] * n_views
    if "params.symmetric=true" in spec.sets:
        return SYMMETRIC_EPOCH_MINUTES
    return EPOCH_MINUTES.get(spec.method, 1.0)


def run_minutes(r: RunStep, scale: str) -> float:
    done = r.epochs_done if r.status == "resume" else 0
    return epoch_minutes(r.spec) * max(r.spec.epochs - done, 0)


def probe_minutes(q: ProbeStep, scale: str) -> float:
    return PROBE_MINUTES.get(q.kind, 1.0)


def estimate_minutes(p: Plan) -> float | None:
    """Minutes on 2 CPU cores for what is left of the plan (None at paper scale: GPUs, not estimated)."""
    if p.scale not in CPU_SCALES:
        return None
    m = sum(run_minutes(r, p.scale) for r in p.todo_runs) + sum(probe_minutes(q, p.scale) for q in p.todo_probes)
    if any(q.kind == "corruption" for q in p.todo_probes):
        m += CORRUPTION_RENDER_MINUTES_PER_IMAGE * PROBE_OPTIONS[p.scale].get("corruption", {}).get("limit", 2000)
    return m


# --- paper-scale datasets ---------------------------------------------------------------------------


# A split that proves a dataset is in place: ObjectNet has only a test split, ImageNet-C one per corruption and severity.
CHECK_SPLIT = {"objectnet13": "test", "imagenet-c-100": "gaussian_noise/1"}


def dataset_status(name: str) -> str | None:
    """None when ``name`` is in place (its root found), else why not (the loader's message names the root it needs)."""
    try:
        if name.startswith("embedded"):
            return None
        if name in ("voc07", "voc0712", "coco"):
            from cssl_bench.eval.detection.datasets import voc_year_dir
            from cssl_bench.eval.detection.finetune import _coco_root, default_data_root

            root = default_data_root()
            if name == "coco":
                _coco_root(root)
            else:
                for year in ("2007", "2012") if name == "voc0712" else ("2007",):
                    voc_year_dir(root, year)
            return None
        from cssl_bench.data.datasets import REGISTRY, get_source

        if name not in REGISTRY:
            return "not known to this version"
        get_source(name, CHECK_SPLIT.get(name, "train"))
    except (UserError, OSError) as e:
        return str(e).splitlines()[0]
    return None


def check_datasets(p: Plan) -> None:
    if p.scale != "paper":
        return
    need = p.datasets()
    missing = {n: why for n in need if (why := dataset_status(n))}
    if missing:
        raise UserError(
            "paper scale needs the real datasets "
            + ", ".join(f"{n} ({'/'.join(need[n])})" for n in sorted(need))
            + "; missing: "
            + "; ".join(f"{n}: {why}" for n, why in sorted(missing.items()))
            + " (see 'cssl-bench data list')"
        )


# --- running -------------------------------------------------------------------------------------------


def check_jobs(jobs: int) -> None:
    """``--jobs`` is a positive count (exit 2 otherwise)."""
    if jobs < 1:
        raise UserError(f"--jobs must be at least 1, got {jobs}", exit_code=2)


def execute(p: Plan, console=None, show_progress: bool = True, jobs: int = 1) -> None:
    """Run the plan's pre-trainings and probes; each probe's records go to the store as it finishes.

    ``jobs``: how many runs (a pre-training and then its probes) go at once, each in a process of its own
    (``spawn``) with ``train.distributed.threads_per_process(jobs)`` torch threads; runs start longest first. One run with
    ``jobs > 1`` gives the numbers a sequential ``reproduce`` gives at that thread count (the thread count
    changes floating-point reduction order, hence a run's numbers: docs/protocols.md). A failed run does
    not stop the others; the failures are reported together at the end (their work so far is kept)."""
    from rich.console import Console
    from rich.markup import escape

    from cssl_bench.results.store import current_command

    check_jobs(jobs)
    console = console or Console(stderr=True)
    skipped = unavailable_runs(p)
    for label, why in skipped:
        console.print(f"[yellow]skipped[/] {escape(label)}: {escape(why)} (its cells stay '{T.MISSING}')")
    missing = p.missing_probes()
    if missing:
        raise UserError("cannot reproduce yet: " + "; ".join(missing.values()))
    check_datasets(p)
    units = [(r, mine) for r in p.runs if (mine := [q for q in p.probes if q.run is r and q.status == "run"])]
    t_start = time.time()
    invocation = current_command()
    if jobs == 1 or len(units) <= 1:
        step = _step_prefixes(sum(_unit_steps(u) for u in units))
        for r, mine in units:
            _execute_run(r, mine, p.scale, p.results, invocation, console, show_progress, step)
    else:
        _execute_parallel(p, units, jobs, invocation, console)
    console.print(f"[green]reproduce done[/] in {(time.time() - t_start) / 60:.1f} min; records in {p.results}")
    if skipped:
        console.print(
            f"[yellow]not reproduced[/] (this version cannot build them): {escape(', '.join(label for label, _ in skipped))}"
        )


def _unit_steps(unit: tuple[RunStep, list[ProbeStep]]) -> int:
    """Printed steps of a run: its pretraining (unless reused) and its probes still to run."""
    r, mine = unit
    return (r.status in ("run", "resume")) + len(mine)


def _step_prefixes(total: int, label: str = ""):
    """A function giving the progress prefix of each next step: ``[LABEL1/TOTAL]``, ``[LABEL2/TOTAL]``, ..."""
    n = itertools.count(1)
    return lambda: f"[{label}{next(n)}/{total}]"


def _execute_run(
    r: RunStep, mine: list[ProbeStep], scale: str, results: Path, invocation, console, show_progress, step
):
    """Pre-train ``r`` unless its run directory is complete, then run its probes ``mine``, appending each one's
    records to the store at ``results``; ``step()`` gives the progress prefix of each printed step."""
    from rich.markup import escape

    from cssl_bench.eval.baseline import reestimate_bn
    from cssl_bench.eval.features import load_run
    from cssl_bench.results.store import ResultsStore
    from cssl_bench.train.checkpoint import run_complete, wait_until_free
    from cssl_bench.train.loop import pretrain, warn_if_collapsed

    store = ResultsStore(results)
    # another process (a second reproduce on the same runs folder) may be training this run: wait for it, then
    # take what it left (complete: reuse; killed midway: resume)
    if wait_until_free(r.run_dir, lambda: console.print(escape(f"waiting: another process is training {r.run_dir}"))):
        if run_complete(r.run_dir, r.recipe):
            if r.status in ("run", "resume"):  # the planned pretrain step, done by the other process
                console.print(escape(f"{step()} pretrain {r.label}: finished by the other process"))
            r.status = "reuse"
        elif r.status == "run" and (r.run_dir / "config.yaml").exists():
            r.status = "resume"
    if r.status in ("run", "resume"):
        console.rule(escape(f"{step()} pretrain {r.label}: {r.spec.method}, {r.spec.epochs} epochs -> {r.run_dir}"))
        pretrain(r.recipe, r.run_dir, resume=r.status == "resume", show_progress=show_progress, console=console)
        r.status = "reuse"
    warn_if_collapsed(r.run_dir, console)
    family = config_family(r.recipe)
    loaded: dict = {}  # (checkpoint epoch, BN on data) -> the loaded run, of one checkpoint at a time
    for q in mine:
        t0 = time.time()
        console.print(f"[bold]{escape(step())}[/] {escape(q.describe())}")
        at = (q.checkpoint_epoch, q.bn == "data")
        if at not in loaded:
            plain = (q.checkpoint_epoch, False)
            if plain not in loaded:  # another checkpoint: drop the previous one's
                loaded = {plain: load_run(r.run_dir, q.checkpoint_epoch)}
            if at[1]:  # a copy of the loaded checkpoint (reestimate_bn leaves its input as it is)
                loaded[at] = reestimate_bn(loaded[plain], q.bn_dataset)
        log = (lambda s: console.print(s, markup=False, highlight=False)) if show_progress else None
        recs = run_probe(q.kind, loaded[at], q.dataset, q.feature, q.protocol, scale, log)
        for rec in recs:
            rec["config_family"] = family
            rec["steps"] = [r.command(scale), q.command()]
            rec["command"] = invocation
        store.append(recs)
        q.status = "done"
        shown = ", ".join(f"{x['metric']} {x['value']:.1f}" for x in recs[:4]) + (" ..." if len(recs) > 4 else "")
        console.print(f"      {escape(shown)}  [dim]({time.time() - t0:.0f} s)[/]")


def _die_with_parent() -> None:
    """Linux: this process gets SIGTERM when its parent dies (a killed ``reproduce --jobs`` leaves no worker running)."""
    import ctypes
    import signal

    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG = 1
    except (OSError, AttributeError):  # another OS: workers finish their run, then exit with the pool
        pass


def _worker_init(threads: int) -> None:
    """A ``--jobs`` worker: its torch threads. (A plugin method needs no registration here: its recipe names the
    file or entry point, and ``methods.build_method`` loads it from there.)"""
    import torch

    _die_with_parent()
    torch.set_num_threads(threads)


def _worker_run(r: RunStep, mine: list[ProbeStep], scale: str, results: Path, invocation) -> float:
    """One run of ``execute(jobs > 1)`` in its worker process, its printed steps prefixed by its label;
    returns its minutes."""
    from rich.console import Console

    t0 = time.time()
    step = _step_prefixes(_unit_steps((r, mine)), f"{r.label} ")
    _execute_run(r, mine, scale, results, invocation, Console(stderr=True), False, step)
    return (time.time() - t0) / 60


def _unit_minutes(unit: tuple[RunStep, list[ProbeStep]], scale: str) -> float:
    """Estimated minutes of a run still to train (0 when reused) plus its probes still to run."""
    r, mine = unit
    return run_minutes(r, scale) * (r.status in ("run", "resume")) + sum(probe_minutes(q, scale) for q in mine)


def _execute_parallel(p: Plan, units: list, jobs: int, invocation, console) -> None:
    """``execute(jobs > 1)``: ``units`` ((run, its probes to run)) on a pool of ``min(jobs, len(units))`` spawned
    processes of ``threads_per_process(jobs)`` torch threads; marks each finished unit done in ``p``; raises one
    ``UserError`` naming every failed run once all have ended."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    from rich.markup import escape

    from cssl_bench.train.distributed import threads_per_process

    threads = threads_per_process(jobs)
    workers = min(jobs, len(units))
    units = sorted(units, key=lambda u: -_unit_minutes(u, p.scale))  # longest first: the short ones fill in last
    console.print(
        f"{len(units)} runs, {workers} at a time, {threads} torch thread{'s' * (threads > 1)} each "
        "(one process per run; progress bars off)"
    )
    failed: list[str] = []
    saved = os.environ.get("OMP_NUM_THREADS")
    os.environ["OMP_NUM_THREADS"] = str(threads)  # the spawned workers' OpenMP pools, before they import torch
    try:
        pool = ProcessPoolExecutor(
            workers,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_worker_init,
            initargs=(threads,),
        )
        try:
            futures = {
                pool.submit(_worker_run, r, mine, p.scale, p.results, invocation): (r, mine) for r, mine in units
            }
            done = 0
            for f in as_completed(futures):
                r, mine = futures[f]
                done += 1
                try:
                    minutes = f.result()
                except Exception as e:  # noqa: BLE001 - reported with the others at the end
                    failed.append(f"{r.label}: {str(e).splitlines()[0] if str(e) else type(e).__name__}")
                    console.print(f"[red]failed[/] {escape(r.label)} ({done}/{len(units)}): {escape(failed[-1])}")
                    continue
                for q in mine:
                    q.status = "done"
                r.status = "reuse"
                console.print(f"[green]done[/] {escape(r.label)} ({done}/{len(units)}) in {minutes:.1f} min")
        except BaseException:  # interrupted: stop the workers too (their runs resume from their last checkpoints)
            for proc in list((getattr(pool, "_processes", None) or {}).values()):
                proc.terminate()
            pool.shutdown(wait=False, cancel_futures=True)
            raise
        pool.shutdown()
    finally:
        if saved is None:
            os.environ.pop("OMP_NUM_THREADS", None)
        else:
            os.environ["OMP_NUM_THREADS"] = saved
    if failed:
        raise UserError(
            f"{len(failed)} of {len(units)} runs failed (the others' records are stored): " + "; ".join(failed)
        )


def unavailable_runs(p: Plan) -> list[tuple[str, str]]:
    """(run, why) for the plan's runs this version cannot build, with the tables that need them."""
    out = []
    for r in p.runs:
        if r.status == "unavailable":
            tables = sorted({t for q in p.probes if q.run is r for t in q.tables})
            out.append((f"{r.label} (for {', '.join(tables)})", r.error or "unavailable"))
    return out


def regression_diff(
    name: str,
    records: list[dict],
    reference: list[dict],
    scale: str,
    rows: list[int] | None = None,
    tolerance: float = 2.0,
) -> list[str]:
    """Cells of table ``name`` (``rows``: 1-based; default all) where ``records`` and ``reference`` differ by
    more than their band, or where either has no value. Empty: they agree.

    The band of a cell is ``max(tolerance, 2 * s)`` percentage points, ``s`` the sample std across the
    reference's seeds (0 for a single seed): a reproduction of one seed lands within two seed stds of the
    committed mean, and ``tolerance`` covers another CPU's arithmetic where the seeds agree closely."""
    ours, ref = T.build(name, records, scale), T.build(name, reference, scale)
    out = []
    for i in range(len(ours.ours)):
        if rows is not None and i + 1 not in rows:
            continue
        for j, (h, c) in enumerate(zip(ours.headers, ours.cells)):
            if c is None:
                continue
            a, b = ours.ours[i][j], ref.ours[i][j]
            band = max(tolerance, 2 * (b.std or 0.0)) if b is not None else tolerance
            if a is None or b is None or abs(a.mean - b.mean) > band:
                out.append(
                    f"{T.row_name(ours, i)} | {h}: reproduced {T.fmt_value(a)} vs committed {T.fmt_value(b)} (band ±{band:.1f})"
                )
    return out


def write_outputs(names: list[str], scale: str, results: Path, add: list[str] | tuple[str, ...] = ()) -> list[Path]:
    """Each table as markdown (ours; and paper | ours | delta) and CSV, the findings, and the plots (of the tables
    with at least one cell of ours), under ``results``; ``add``: the methods whose rows of one's own the tables get
    (``tables.method_row``)."""
    from cssl_bench.results.store import ResultsStore
    from cssl_bench.train.checkpoint import atomic_write_text

    records = ResultsStore(results).read()
    out = []
    for name in names:
        t = T.build(name, records, scale, add=[T.method_row(T.resolve(name), m) for m in add])
        for suffix, text in (
            (".md", T.render(t, "md")),
            (".csv", T.render(t, "csv")),
            ("-compare.md", T.render(t, "md", compare=True, provenance=True)),
        ):
            path = Path(results) / "tables" / f"{name}{suffix}"
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_text(path, text)
            out.append(path)
    path = Path(results) / "findings.md"
    atomic_write_text(path, f"# Paper findings at {scale} scale\n\n" + T.findings_markdown(records, scale))
    out.append(path)
    from cssl_bench.results import plots

    for name in names:  # every table has a figure (plots.PLOTS)
        try:
            out.append(plots.plot(name, records, scale, Path(results) / "plots" / f"{name}.png"))
        except UserError:  # a table none of whose cells has results yet (or only --add rows ran): no figure
            continue
    return out
