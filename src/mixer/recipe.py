"""Typed recipe model, built from a validated YAML document.

Validation (validate.py) guarantees the shapes here, so this module only translates; it never reports errors.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from mixer.registry import HubRef
from mixer.yamlpos import Located

SelectorMode = Literal["take", "all", "fraction", "weight"]


@dataclass(frozen=True)
class Selector:
    """How many rows a source contributes; exactly one mode per source, never an overloaded number."""

    mode: SelectorMode
    value: float | int | None = None

    def describe(self) -> str:
        return "take: all" if self.mode == "all" else f"{self.mode}: {self.value}"

    @property
    def takes_nothing(self) -> bool:
        """`take: 0`: a source kept out of the mixture (an evolve block's seed pool, or one switched off)."""
        return self.mode == "take" and self.value == 0


@dataclass(frozen=True)
class Filters:
    min_turns: int | None = None
    max_turns: int | None = None
    max_chars: int | None = None
    lang: tuple[str, ...] | None = None
    drop_patterns: tuple[str, ...] = ()


@dataclass(frozen=True)
class SourceSpec:
    name: str
    registry: str | None
    paths: tuple[str, ...]
    format: str | None
    fields: dict[str, str]
    options: dict[str, Any]
    selector: Selector
    filters: Filters
    on_error: str | None
    evolved: str | None = None  # name of the evolve block whose output this source mixes in
    hub: HubRef | None = None  # a hub dataset named in the recipe itself, not through the registry
    license: str | None = None  # the recipe's word for the source's license (a registry entry has its own)
    system: str | None = None  # a system turn for the source's conversations that have none
    key: str | None = None  # where the recipe declares it, when not under `sources:` (a stage's `data:`)

    @property
    def where(self) -> str:
        """How errors name it: `sources.NAME`, or `stages.NAME.data` for a stage's own data, which has no source
        of that name to look for."""
        return self.key or f"sources.{self.name}"


@dataclass(frozen=True)
class BenchmarkSpec:
    name: str
    path: str | None = None
    fields: tuple[str, ...] = ()


@dataclass(frozen=True)
class DecontamSpec:
    benchmarks: tuple[BenchmarkSpec, ...]
    n: int = 13
    mode: str = "report"  # or remove


@dataclass(frozen=True)
class HeldOut:
    """`eval: {rows: N}` or `{fraction: f}`: rows held out as a `test` split, of the mixture (`mixture.eval`)
    or of a stage's own data. Empty (false) when the recipe asks for none."""

    rows: int | None = None
    fraction: float | None = None

    def __bool__(self) -> bool:
        return self.rows is not None or self.fraction is not None

    def count(self, total_rows: int) -> int:
        """Rows of the split out of `total_rows` (a fraction rounds to the nearest row, at least 1)."""
        if self.rows is not None:
            return self.rows
        if self.fraction is not None:
            return max(1, math.floor(self.fraction * total_rows + 0.5)) if total_rows else 0
        return 0


def held_out(value: Any) -> HeldOut:
    return HeldOut((value or {}).get("rows"), (value or {}).get("fraction"))


@dataclass(frozen=True)
class MixtureSpec:
    total: int | None = None
    shuffle: bool = True
    dedup: str = "none"
    drop_patterns: tuple[str, ...] = ()
    decontaminate: DecontamSpec | None = None
    eval: HeldOut = field(default_factory=HeldOut)  # the `test` split: the last rows of the shuffle


def decontam_spec(value: Any) -> DecontamSpec | None:
    if not value:
        return None
    settings = value if isinstance(value, dict) else {"benchmarks": value}
    benchmarks = tuple(
        BenchmarkSpec(b)
        if isinstance(b, str)
        else BenchmarkSpec(b["name"], b.get("path"), tuple(b.get("fields") or ()))
        for b in settings["benchmarks"]
    )
    return DecontamSpec(benchmarks, settings.get("n", 13), settings.get("mode", "report"))


@dataclass(frozen=True)
class OutputSpec:
    dir: str
    shard_rows: int = 100_000
    tokenizer: str | None = None  # tokenizer.json for exact token counts in the statistics


@dataclass(frozen=True)
class Hyperparameters:
    """Optimisation settings; `defaults_for(kind)` gives the Tülu 2 values (Ivison et al. 2023, App. B)."""

    learning_rate: float = 2e-5
    epochs: float = 2
    max_steps: int | None = None
    warmup_ratio: float = 0.03
    lr_scheduler: str = "linear"
    per_device_batch_size: int = 1
    gradient_accumulation_steps: int = 16
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    seed: int = 42
    logging_steps: int = 1
    save_steps: int | None = None  # None: a checkpoint at the end of every epoch
    save_total_limit: int = 2
    gradient_checkpointing: bool = False
    report_to: tuple[str, ...] = ()


STAGE_DEFAULTS: dict[str, dict[str, Any]] = {
    # Tülu 2 SFT: lr 2e-5, 2 epochs, linear with 3% warmup, effective batch 128 (8 GPUs x 1 x 16), 8K tokens
    "sft": {"learning_rate": 2e-5, "epochs": 2, "warmup_ratio": 0.03, "gradient_accumulation_steps": 16},
    # Tülu 2 DPO: lr 5e-7, 3 epochs, 10% warmup, effective batch 32 (8 x 1 x 4), beta 0.1
    "dpo": {"learning_rate": 5e-7, "epochs": 3, "warmup_ratio": 0.1, "gradient_accumulation_steps": 4},
}


@dataclass(frozen=True)
class Launcher:
    num_processes: int = 1  # per machine
    num_machines: int = 1
    mixed_precision: str = "bf16"
    backend: str = "ddp"  # ddp | deepspeed | fsdp
    zero_stage: int | None = None
    offload: bool = False
    main_process_port: int = 29500

    @property
    def world_size(self) -> int:
        return self.num_processes * self.num_machines


@dataclass(frozen=True)
class StageSpec:
    name: str
    kind: str  # sft | dpo
    model: str | dict[str, Any]  # hub id/path, {stage: name} or {init: llama, config: {...}}
    data: str | SourceSpec  # "mixture" or a source
    tokenizer: str | None = None
    chat_template: str | None = None
    max_seq_length: int = 8192
    packing: bool = False
    beta: float = 0.1
    reference: str = "model"
    hyperparameters: Hyperparameters = field(default_factory=Hyperparameters)
    launcher: Launcher = field(default_factory=Launcher)
    eval: HeldOut = field(default_factory=HeldOut)  # of a source `data` (the mixture's: mixture.eval)

    @property
    def parent_stage(self) -> str | None:
        return self.model.get("stage") if isinstance(self.model, dict) else None


@dataclass(frozen=True)
class Endpoint:
    """An OpenAI-compatible chat model. The API key is never here: it is read from `api_key_env` at call time."""

    model: str
    base_url: str | None = None
    api_key_env: str = "OPENAI_API_KEY"
    temperature: float = 1.0
    top_p: float | None = None
    max_tokens: int = 2048
    timeout: float = 120.0
    max_retries: int = 6
    retry_base_seconds: float = 1.0
    reasoning: str = "drop"  # a <think> block in the teacher's answers: drop | keep (rewrites always drop it)
    # the request's name for max_tokens: OpenAI's reasoning models refuse `max_tokens` and take this one
    max_tokens_param: str = "max_tokens"
    # server-specific request fields, sent as they are (vLLM's chat_template_kwargs: {enable_thinking: false})
    extra_body: dict[str, Any] | None = None

    def request(self) -> dict[str, Any]:
        """`sampling()` as the server is sent it: the token limit under the name it takes. The cache key keeps
        `max_tokens`, so a recipe that renames it keeps its cached calls."""
        params = self.sampling()
        params[self.max_tokens_param] = params.pop("max_tokens")
        return params

    def sampling(self) -> dict[str, Any]:
        """The parameters that shape a completion: part of every cache key."""
        params: dict[str, Any] = {"temperature": self.temperature, "max_tokens": self.max_tokens}
        if self.top_p is not None:
            params["top_p"] = self.top_p
        if self.extra_body:
            params["extra_body"] = self.extra_body
        return params


@dataclass(frozen=True)
class OperatorChoice:
    name: str
    weight: float = 1.0
    template: str | None = None  # overrides the packaged template


@dataclass(frozen=True)
class EvolveSpec:
    name: str
    source: str  # `from:` a source of this recipe
    sample: int | None  # None: every selected row
    operators: tuple[OperatorChoice, ...]
    rounds: int
    keep: str  # all_rounds | last_round
    teacher: Endpoint
    judge: Endpoint
    eliminate: tuple[str, ...]
    concurrency: int
    budget_usd: float | None
    budget_tokens: int | None
    prices: dict[str, float] | None  # {prompt_per_1k, completion_per_1k}


@dataclass(frozen=True)
class Recipe:
    path: Path
    name: str
    description: str
    seed: int
    sources: tuple[SourceSpec, ...]
    mixture: MixtureSpec
    output: OutputSpec
    stages: tuple[StageSpec, ...]
    evolve: tuple[EvolveSpec, ...]
    document: dict[str, Any] = field(repr=False)  # the interpolated YAML data, for manifests and diffs
    located: Located | None = field(default=None, repr=False, compare=False)

    @property
    def base_dir(self) -> Path:
        return self.path.parent

    def source(self, name: str) -> SourceSpec:
        return next(s for s in self.sources if s.name == name)

    @property
    def base_sources(self) -> tuple[SourceSpec, ...]:
        """Sources read from files or the hub (not produced by an evolve block)."""
        return tuple(s for s in self.sources if s.evolved is None)

    def block(self, name: str) -> EvolveSpec:
        return next(b for b in self.evolve if b.name == name)

    @property
    def mixture_document(self) -> dict[str, Any]:
        return mixture_part(self.document)


def selector_of(spec: dict[str, Any]) -> Selector:
    if spec.get("take") == "all":
        return Selector("all")
    for mode in ("take", "fraction", "weight"):
        if mode in spec:
            return Selector(mode, spec[mode])
    raise ValueError("validated source has no selector")


def _as_tuple(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    return (value,) if isinstance(value, str) else tuple(value)


def hub_ref(value: str | dict[str, Any]) -> HubRef:
    """`hub: org/name` or `org/name@revision`, or the mapping {id, revision, split, config, data_files}. A
    revision left out is `main`, which the lock pins to the commit first read, as for registry entries."""
    if isinstance(value, str):
        repo, _, revision = value.partition("@")
        return HubRef(repo, revision or "main")
    return HubRef(
        value["id"],
        str(value.get("revision") or "main"),
        value.get("split") or "train",
        value.get("config"),
        data_files=value.get("data_files"),
    )


def source_spec(name: str, spec: dict[str, Any], key: str | None = None) -> SourceSpec:
    return SourceSpec(
        name=name,
        key=key,
        registry=spec.get("source"),
        paths=_as_tuple(spec.get("path")),
        format=spec.get("format"),
        fields=dict(spec.get("fields") or {}),
        options=dict(spec.get("options") or {}),
        selector=selector_of(spec),
        filters=Filters(
            min_turns=spec.get("min_turns"),
            max_turns=spec.get("max_turns"),
            max_chars=spec.get("max_chars"),
            lang=_as_tuple(spec.get("lang")) or None,
            drop_patterns=_as_tuple(spec.get("drop_patterns")),
        ),
        on_error=spec.get("on_error"),
        evolved=spec.get("evolved"),
        hub=hub_ref(spec["hub"]) if spec.get("hub") else None,
        license=spec.get("license"),
        system=spec.get("system"),
    )


OPERATOR_PRESETS = {
    # WizardLM (Xu et al. 2023): five in-depth operators and one in-breadth operator
    "wizardlm": (
        "add_constraints",
        "deepening",
        "concretizing",
        "increase_reasoning",
        "complicate_input",
        "in_breadth",
    ),
    # WizardCoder (Luo et al. 2023): five code operators
    "wizardcoder": (
        "code_add_constraints",
        "code_less_common_requirement",
        "code_more_reasoning",
        "code_erroneous_reference",
        "code_higher_complexity",
    ),
}
WIZARDLM_RULES = ("no_information_gain", "refusal", "punctuation_only", "template_copy")
# `truncated` joins WizardLM's four by default: a rewrite or answer cut off at max_tokens trains the model to stop
# mid-sentence, and Alpaca's generator drops such completions too
DEFAULT_ELIMINATION = {
    "wizardlm": (*WIZARDLM_RULES, "truncated"),
    "wizardcoder": (*WIZARDLM_RULES, "truncated", "code_syntax"),
}


def operator_choices(value: Any) -> tuple[OperatorChoice, ...]:
    """A preset, or a list of presets, names and `{name, weight, template}`. An operator named twice takes its
    last entry, in the place of its first: `[wizardlm, {name: in_breadth, weight: 2}]` is WizardLM's six with
    in_breadth drawn twice as often, not a seventh operator beside the first in_breadth."""
    if isinstance(value, str):
        return tuple(OperatorChoice(name) for name in OPERATOR_PRESETS[value])
    choices: dict[str, OperatorChoice] = {}
    for item in value:
        if isinstance(item, str):
            choices.update((n, OperatorChoice(n)) for n in OPERATOR_PRESETS.get(item, (item,)))
        else:
            choices[item["name"]] = OperatorChoice(item["name"], float(item.get("weight", 1.0)), item.get("template"))
    return tuple(choices.values())


def endpoint(spec: dict[str, Any], base: Endpoint | None = None, **defaults: Any) -> Endpoint:
    inherited = {} if base is None else {k: v for k, v in vars(base).items()}
    return Endpoint(**{**inherited, **defaults, **spec})


def evolve_spec(name: str, spec: dict[str, Any]) -> EvolveSpec:
    operators = spec.get("operators", "wizardlm")
    preset = operators if isinstance(operators, str) else "wizardlm"
    teacher = endpoint(spec["teacher"])
    budget = spec.get("budget") or {}
    return EvolveSpec(
        name=name,
        source=spec["from"],
        sample=None if spec.get("sample", "all") == "all" else int(spec["sample"]),
        operators=operator_choices(operators),
        rounds=spec.get("rounds", 4),
        keep=spec.get("keep", "all_rounds"),
        teacher=teacher,
        # the judge answers "Equal" or "Not Equal": greedy and short unless the recipe says otherwise
        judge=endpoint(spec.get("judge") or {}, teacher, temperature=0.0, max_tokens=8),
        eliminate=tuple(spec.get("eliminate", DEFAULT_ELIMINATION[preset])),
        concurrency=spec.get("concurrency", 16),
        budget_usd=budget.get("usd"),
        budget_tokens=budget.get("tokens"),
        prices=spec.get("prices"),
    )


def stage_spec(spec: dict[str, Any]) -> StageSpec:
    kind = spec["kind"]
    hyper = {**STAGE_DEFAULTS[kind], **(spec.get("hyperparameters") or {})}
    hyper["report_to"] = tuple(hyper.get("report_to") or ())
    data = spec["data"]
    return StageSpec(
        name=spec["name"],
        kind=kind,
        model=spec["model"],
        data=data if data == "mixture" else source_spec(spec["name"], data, key=f"stages.{spec['name']}.data"),
        tokenizer=spec.get("tokenizer"),
        chat_template=spec.get("chat_template"),
        max_seq_length=spec.get("max_seq_length", 8192),
        packing=spec.get("packing", False),
        beta=spec.get("beta", 0.1),
        reference=spec.get("reference", "model"),
        hyperparameters=Hyperparameters(**hyper),
        launcher=Launcher(**(spec.get("launcher") or {})),
        eval=held_out(spec.get("eval")),
    )


def mixture_part(document: dict[str, Any]) -> dict[str, Any]:
    """A recipe without its training stages: all a build's output depends on. A learning rate edited between
    runs leaves the mixture as it is, and `mixer train` does not build it again."""
    return {key: value for key, value in document.items() if key != "stages"}


def output_dir_of(data: dict[str, Any]) -> str | None:
    """Where a recipe's build goes, as written (`output.dir`, else `out/<name>`); None for a recipe without a
    name, which validation refuses."""
    output = data.get("output")
    written = output.get("dir") if isinstance(output, dict) else None
    name = data.get("name")
    return written or (f"out/{name}" if isinstance(name, str) else None)


def build_recipe(path: Path, data: dict[str, Any], located: Located | None = None) -> Recipe:
    sources = [source_spec(name, spec) for name, spec in (data.get("sources") or {}).items()]
    mixture = data.get("mixture") or {}
    output = data.get("output") or {}
    return Recipe(
        path=path,
        name=data["name"],
        description=data.get("description", ""),
        seed=data.get("seed", 42),
        sources=tuple(sources),
        mixture=MixtureSpec(
            total=mixture.get("total"),
            shuffle=mixture.get("shuffle", True),
            dedup=mixture.get("dedup", "none"),
            drop_patterns=_as_tuple(mixture.get("drop_patterns")),
            decontaminate=decontam_spec(mixture.get("decontaminate")),
            eval=held_out(mixture.get("eval")),
        ),
        stages=tuple(stage_spec(s) for s in data.get("stages") or []),
        evolve=tuple(evolve_spec(n, b) for n, b in (data.get("evolve") or {}).items()),
        output=OutputSpec(
            dir=output_dir_of(data) or "",  # validated: a recipe has a name
            shard_rows=output.get("shard_rows", 100_000),
            tokenizer=output.get("tokenizer"),
        ),
        document=data,
        located=located,
    )
