"""The README's code blocks, and which of them the tests run as written (`python -m tests.readme_blocks` lists them).

Every ```bash and ```json block of README.md is named here by its first line. A block is either ``RUN``: the
slow test tests/integration/test_readme_blocks.py runs it in a fresh clone (with the README's placeholders
``/path/to/...`` made into temporary folders), or ``SKIP`` with the reason it is too slow or needs what this
machine lacks and the test that covers the same path instead. Every block, run or not, is checked to name only
programs that exist once the venv is activated and repository files that exist (tests/unit/test_readme_blocks.py):
that is what a bare `python` (ModuleNotFoundError) or `dvc: command not found` broke.
"""

from __future__ import annotations

import os
import re
import shlex
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
FENCE = re.compile(r"^( *)```(bash|json)\n(.*?)^\1```", re.M | re.S)

RUN, SKIP = "run", "skip"
CHECKOUT = "/path/to/udon-pipeline"  # the README's placeholder for this checkout
ACTIVATE = re.compile(r"^source \S*\.venv/bin/activate\b")
VENV_PATH = re.compile(r"\bPATH=\S*\.venv/bin:\$PATH")
GIT_USER = {"GIT_AUTHOR_NAME": "ci", "GIT_AUTHOR_EMAIL": "ci@example.com", "GIT_COMMITTER_NAME": "ci",
            "GIT_COMMITTER_EMAIL": "ci@example.com"}  # what a user's ~/.gitconfig gives git
# The telemetry opt-outs of pipelines/cli/common.py for the tools a block runs itself rather than through
# `udon` (which sets every tool's opt-out before it loads them, and is tested doing so from a bare shell):
# `dvc init` and `dvc add` of the BYOB block would start DVC's analytics daemon (network). git has none;
# `make` exports MLflow's and DO_NOT_TRACK itself (Makefile); iterative's telemetry ignores DO_NOT_TRACK.
TOOL_OPT_OUTS = {"DVC_NO_ANALYTICS": "1"}


def user_shell(home: Path, venv: Path) -> dict[str, str]:
    """The environment of a user's fresh shell: the system's PATH without ``venv/bin``, ``home`` as HOME, a
    git identity, no test isolation variable; only the opt-outs of ``TOOL_OPT_OUTS`` kept (a test sends
    nothing over the network)."""
    venv_bin = (venv / "bin").resolve()
    path = os.pathsep.join(p for p in os.environ["PATH"].split(os.pathsep) if Path(p).resolve() != venv_bin)
    return {"PATH": path or "/usr/bin:/bin", "HOME": str(home), "LANG": "C.UTF-8", **GIT_USER, **TOOL_OPT_OUTS}


@dataclass(frozen=True)
class Block:
    lang: str
    text: str
    line: int  # 1-based line of the opening fence

    @property
    def key(self) -> str:
        """The block's first line after any venv activation, which names it in ``BLOCKS``."""
        lines = [line.strip() for line in self.text.splitlines()]
        return next(line for line in lines if not ACTIVATE.match(line))

    @property
    def activates_venv(self) -> bool:
        """Whether the block puts the venv's programs on PATH itself (else it gets the shell's PATH)."""
        return any(ACTIVATE.match(line.strip()) or VENV_PATH.search(line) for line in self.text.splitlines())


# first line -> (RUN, how the test runs it) or (SKIP, why not and what covers it)
BLOCKS: dict[str, tuple[str, str]] = {
    "make run    # creates .venv, installs the locked stack, runs the whole pipeline on the demo benchmark": (
        SKIP, "installs the 6.9 GB venv and trains the demo (~5 min); the check runs `make run CONFIG=<tiny>` instead "
              "and pastes the commands it prints"),
    "make models                     # the versions: stage, aliases, gate verdict, metrics": (
        RUN, "after `make run CONFIG=<tiny run>` in the clone"),
    '{"name": "my-benchmark",': (RUN, "as the benchmark.json of /path/to/mydata, read by the pipeline's own reader"),
    "mkdir -p /path/to/my-repo && cd /path/to/my-repo && git init && dvc init && mv /path/to/mydata data \\": (
        RUN, "/path/to/mydata = tests/byob.py's two-domain benchmark with the README's benchmark.json"),
    ".venv/bin/udon data validate /path/to/my-repo/data --out /tmp/my-benchmark.html   # exit 0, 1 or 2": (
        RUN, "in the clone, on the my-repo the block above made"),
    "cd /path/to/udon-pipeline && export UDON_HOME=$PWD/.udon": (
        SKIP, "trains the whole pipeline; tests/integration/test_byob.py runs the same on the same benchmark"),
    "udon data pack /path/to/uned_download /path/to/repo/data --short-side 288   # ~4.1M files -> ~430 shards": (
        SKIP, "needs the UnED download (~0.5 TB); tests/integration/test_packed_pipeline.py packs a generated "
              "UnED-shaped benchmark and runs it from ingest to register"),
    "torchrun --nproc-per-node 8 -m udon_core.train --config configs/uned.yaml \\": (
        SKIP, "needs 8 GPUs and UnED; tests/integration/test_torchrun.py runs the entry point on 2 CPU ranks"),
    "export UDON_HOME=$PWD/.udon PATH=$PWD/.venv/bin:$PATH     # mlflow's server runs uvicorn from the venv": (
        SKIP, "needs a champion of the demo benchmark; test_training_pipeline.py::"
              "test_mlflow_models_serve_answers_an_image_with_the_udon_embed_vector serves and queries one"),
    "python bench/ablation.py --config zenml.yaml --data data --methods udon udon-offline unic udon+unic \\": (
        SKIP, "14 min on the 2-core CPU"),
    "python bench/ablation.py --config zenml.yaml --data data --methods unic unic-published \\": (
        SKIP, "16.5 min on the 2-core CPU"),
}

# Shell words that are not programs to find on PATH.
BUILTINS = {"cd", "export", "source", ".", "set", "echo", "true", "mkdir", "mv", "cp"}
# Arguments that name an output the command writes, so need not exist beforehand.
OUTPUT_FLAGS = {"--out", "--report", "--checkpoint-dir", "--save-embeddings"}


def blocks(readme: Path = README) -> list[Block]:
    """The README's bash and JSON blocks (indented ones inside lists too), with their indent removed."""
    text = readme.read_text()
    found = []
    for m in FENCE.finditer(text):
        indent = len(m.group(1))
        body = "\n".join(line[indent:] for line in m.group(3).splitlines())
        found.append(Block(m.group(2), body, text.count("\n", 0, m.start()) + 1))
    return found


def commands(block: Block) -> list[list[str]]:
    """Each simple command of a bash block as its words (continuations joined, comments dropped)."""
    script = block.text.replace("\\\n", " ")
    out = []
    for line in script.splitlines():
        words = shlex.split(line, comments=True)
        current: list[str] = []
        for word in words + [";"]:
            if word in {"&&", "||", ";", "|", "&"} or word.endswith(";"):
                if word.endswith(";") and word != ";":
                    current.append(word[:-1])
                if current:
                    out.append(current)
                current = []
            else:
                current.append(word)
    return out


def programs(block: Block) -> set[str]:
    """The programs a bash block calls (after ``VAR=value`` prefixes; not shell builtins)."""
    found = set()
    for words in commands(block):
        words = [w for w in words if not re.match(r"^[A-Z_][A-Z0-9_]*=", w)] if words[0] != "export" else []
        if words and words[0] not in BUILTINS:
            found.add(words[0])
    return found


def repo_files(block: Block) -> set[str]:
    """Repository files a bash block reads (``bench/ablation.py``, ``configs/uned.yaml``): relative paths with a
    file extension, not globs, not placeholders, not what follows an output flag."""
    found, in_checkout = set(), True
    for words in commands(block):
        if words[0] == "cd":  # after `cd /path/to/my-repo` relative paths are the user's, not ours
            in_checkout = words[1:2] == [CHECKOUT]
            continue
        for before, word in zip([""] + words, words):
            if not in_checkout or before in OUTPUT_FLAGS or word.startswith(("/", "-")) or any(c in word for c in "*:$="):
                continue
            if re.fullmatch(r"[\w.-]+(/[\w.-]+)*\.(py|yaml|yml|json|toml|dvc)", word):
                found.add(word)
    return found


def main() -> None:
    for block in blocks():
        kind, why = BLOCKS.get(block.key, ("UNLISTED", "add it to tests/readme_blocks.py BLOCKS"))
        print(f"README.md:{block.line:<4} {kind:8} {block.key[:70]}\n{'':14}{why}")


if __name__ == "__main__":
    main()
