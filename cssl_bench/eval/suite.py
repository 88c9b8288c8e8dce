"""``cssl-bench evaluate RUN --suite looc|simsiam|all``: every probe a run's paper tables need.

- ``simsiam`` (SimSiam Table 4): the linear probe with the ``simsiam`` protocol on the ImageNet role.
- ``looc`` (LooC Tables 1, 2, 3, 5), all with the ``looc`` linear protocol: linear on IN-100, rotation
  on IN-100, fine-grained on iNat-1k and CUB-200, few-shot on Flowers-102, corruption on IN-C-100
  (the IN-100 probe on corrupted test images), ObjectNet-13 (the IN-100 probe, restricted logits).
- ``all``: both, plus kNN on IN-100.

Dataset roles map to the paper's datasets at ``paper`` scale and to the embedded stand-ins at
``tiny``/``small`` (docs/records.md); steps that coincide at a scale (iNat and CUB both become
``embedded-fine``) run once. Linear classifiers and features are cached in the run directory, so
the probes that share the IN-100 probe train it once.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field

from cssl_bench import UserError
from cssl_bench.eval.features import LoadedRun
from cssl_bench.eval.linear import LinearProtocol, get_protocol

ROLES: dict[str, dict[str, str | None]] = {
    "in100": {"cpu": "embedded", "paper": "imagenet100"},
    "in1k": {"cpu": "embedded", "paper": "imagenet"},
    "inat": {"cpu": "embedded-fine", "paper": "inat2019"},
    "cub": {"cpu": "embedded-fine", "paper": "cub200"},
    "flowers": {"cpu": "embedded-fine", "paper": "flowers102"},
    "inc": {"cpu": None, "paper": "imagenet-c-100"},  # None: corrupt the IN-100 stand-in's test split on the fly
    "on13": {"cpu": "embedded-shift", "paper": "objectnet13"},
}
SUITES = ("looc", "simsiam", "all")
PROBES = ("linear", "rotation", "finegrained", "fewshot", "corruption", "objectnet", "knn")


@dataclass(frozen=True)
class Step:
    probe: str  # linear | knn | rotation | finegrained | fewshot | corruption | objectnet
    dataset: str
    protocol: str | None = None  # linear protocol name
    corrupted: str | None = None  # corruption: an ImageNet-C-style dataset, None for on the fly

    def describe(self) -> str:
        extra = f" ({self.protocol})" if self.protocol and self.probe == "linear" else ""
        src = f" <- {self.corrupted}" if self.corrupted else ""
        return f"{self.probe}{extra} on {self.dataset}{src}"


@dataclass
class SuiteOptions:
    """Options passed to every probe of the suite (None: each probe's default)."""

    feature: str | None = None
    linear_epochs: int | None = None
    batch_size: int | None = None
    lr: float | None = None
    augment: bool | None = None  # None: on at paper scale, off (cached features) at tiny/small
    feature_norm: str | None = None
    rotation_limit: int | None = None
    corruptions: list[str] | None = None
    severities: list[int] | None = None
    corruption_limit: int | None = None
    min_size: int = 64
    seed: int = 0
    shots: list[int] = field(default_factory=lambda: [5, 10])
    trials: int = 10
    knn_k: int | None = None
    knn_temperature: float = 0.1
    probes: list[str] | None = None  # run only these probe kinds


def dataset_for(role: str, scale: str) -> str | None:
    return ROLES[role]["paper" if scale == "paper" else "cpu"]


def plan(suite: str, scale: str) -> list[Step]:
    """The ordered, de-duplicated steps of ``suite`` at ``scale``."""
    if suite not in SUITES:
        raise UserError(f"unknown suite {suite!r}; choose from {', '.join(SUITES)}", exit_code=2)
    d = lambda role: dataset_for(role, scale)  # noqa: E731
    steps: list[Step] = []
    if suite in ("simsiam", "all"):
        steps.append(Step("linear", d("in1k"), "simsiam"))
    if suite in ("looc", "all"):
        steps += [
            Step("linear", d("in100"), "looc"),
            Step("rotation", d("in100"), "looc"),
            Step("finegrained", d("inat"), "looc"),
            Step("finegrained", d("cub"), "looc"),
            Step("fewshot", d("flowers")),
            Step("corruption", d("in100"), "looc", d("inc")),
            Step("objectnet", d("on13"), "looc"),
        ]
    if suite == "all":
        steps.append(Step("knn", d("in100")))
    seen, out = set(), []
    for s in steps:
        if s not in seen:
            seen.add(s)
            out.append(s)
    return out


def linear_protocol(name: str, o: SuiteOptions, scale: str) -> LinearProtocol:
    """The named protocol as ``scale`` probes it (``LinearProtocol.for_scale``), with the suite's options."""
    return (
        get_protocol(name)
        .for_scale(scale)
        .with_overrides(
            epochs=o.linear_epochs,
            batch_size=o.batch_size,
            lr=o.lr,
            augment=o.augment,
            feature_norm=o.feature_norm,
            names={"epochs": "--linear-epochs"},
        )
    )


def run_step(run: LoadedRun, step: Step, o: SuiteOptions) -> list[dict]:
    from cssl_bench.eval.corruption import probe_corruption
    from cssl_bench.eval.fewshot import FewShotProtocol, probe_fewshot
    from cssl_bench.eval.finegrained import probe_finegrained
    from cssl_bench.eval.objectnet import probe_objectnet
    from cssl_bench.eval.probes import probe_knn, probe_linear
    from cssl_bench.eval.rotation import probe_rotation

    scale = run.recipe.scale
    p = linear_protocol(step.protocol, o, scale) if step.protocol else None
    if step.probe == "linear":
        return probe_linear(run, step.dataset, p, o.feature)[0]
    if step.probe == "rotation":
        return probe_rotation(run, step.dataset, p, o.feature, limit=o.rotation_limit, seed=o.seed)
    if step.probe == "finegrained":
        return probe_finegrained(run, step.dataset, p, o.feature)
    if step.probe == "fewshot":
        return probe_fewshot(
            run, step.dataset, FewShotProtocol(shots=list(o.shots), trials=o.trials, seed=o.seed), o.feature
        )
    if step.probe == "corruption":
        return probe_corruption(
            run,
            step.dataset,
            p,
            o.feature,
            o.corruptions,
            o.severities,
            o.corruption_limit,
            o.seed,
            o.min_size,
            step.corrupted,
        )
    if step.probe == "objectnet":
        return probe_objectnet(run, step.dataset, p, o.feature)
    if step.probe == "knn":
        return probe_knn(run, step.dataset, o.knn_k, o.knn_temperature, o.feature)
    raise UserError(f"unknown probe {step.probe!r}", exit_code=2)


def check_probes(probes: list[str] | None) -> None:
    """Refuse probe kinds that no suite has (exit 2, listing the valid ones)."""
    unknown = [p for p in dict.fromkeys(probes or []) if p not in PROBES]
    if unknown:
        raise UserError(
            f"unknown --probe {', '.join(map(repr, unknown))}; choose from {', '.join(PROBES)}", exit_code=2
        )


def check_options(o: SuiteOptions) -> None:
    """Validate every option of the suite before any probe runs, so a bad value fails before work is stored."""
    from cssl_bench.eval.fewshot import FewShotProtocol
    from cssl_bench.eval.knn import check_knn_options

    check_probes(o.probes)
    linear_protocol("looc", o, "tiny")
    FewShotProtocol(shots=list(o.shots), trials=o.trials, seed=o.seed)
    check_knn_options(o.knn_k, o.knn_temperature, "kNN k", "kNN temperature")
    for name, v in (("--rotation-limit", o.rotation_limit), ("--limit", o.corruption_limit)):
        if v is not None and v < 1:
            raise UserError(f"{name} must be an integer >= 1, got {v}", exit_code=2)


def select_steps(suite: str, scale: str, probes: list[str] | None = None) -> list[Step]:
    """The steps of ``suite`` at ``scale``, only those of the ``probes`` kinds when given."""
    steps = plan(suite, scale)
    if probes:
        check_probes(probes)
        unknown = set(probes) - {s.probe for s in steps}
        if unknown:
            raise UserError(
                f"suite {suite} has no probe {', '.join(sorted(unknown))}; it runs {', '.join(dict.fromkeys(s.probe for s in steps))}",
                exit_code=2,
            )
        steps = [s for s in steps if s.probe in probes]
    return steps


def run_suite(run: LoadedRun, suite: str, o: SuiteOptions | None = None) -> Iterator[tuple[Step, list[dict], float]]:
    """Run each step in turn, yielding (step, records, seconds) as soon as a step finishes."""
    o = o or SuiteOptions()
    check_options(o)
    steps = select_steps(suite, run.recipe.scale, o.probes)
    for step in steps:
        t0 = time.perf_counter()
        recs = run_step(run, step, o)
        yield step, recs, time.perf_counter() - t0
