"""Local multiple-choice tasks: the JSONL file format that ``retnet eval --tasks`` reads.

One JSON object per line. A line is either a document::

    {"context": "The man broke his toe because", "choices": ["he dropped a hammer.", "he sang."], "gold": 0}

with an optional ``"split": "fewshot"`` that puts the document in the few-shot pool instead of the evaluated set
(``"split": "test"`` or no ``split`` evaluates it), or, on the first line only, a header that names the task and its
delimiters::

    {"task": {"name": "copa", "target_delimiter": " ", "fewshot_delimiter": "\\n\\n"}}

``context`` is a string, ``choices`` a list of at least two strings, ``gold`` the index of the right choice. A choice
is scored as the continuation ``target_delimiter + choice`` of the prompt (lm-evaluation-harness's convention);
docs/evaluation.md shows complete files. Blank lines are skipped; anything else is an error naming the line.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

SPLITS = ("test", "fewshot")
HEADER_KEYS = ("name", "target_delimiter", "fewshot_delimiter")
DOC_KEYS = ("context", "choices", "gold", "split")


@dataclass(frozen=True)
class Doc:
    """One multiple-choice question: the context, the candidate continuations and the index of the right one."""

    context: str
    choices: tuple[str, ...]
    gold: int


@dataclass(frozen=True)
class Task:
    """A multiple-choice task: the evaluated documents, the few-shot pool and how prompts are joined.

    Attributes:
        name: the task's name (the header's, else the file name without ``.jsonl``).
        docs: the evaluated documents, in file order.
        fewshot_pool: documents reserved for few-shot examples (may be empty: then examples come from ``docs``).
        target_delimiter: put between a context and a choice.
        fewshot_delimiter: put between the examples of a few-shot prompt and before the question.
        path: the file it was read from (None for a task built in code).
    """

    name: str
    docs: tuple[Doc, ...]
    fewshot_pool: tuple[Doc, ...] = ()
    target_delimiter: str = " "
    fewshot_delimiter: str = "\n\n"
    path: str | None = field(default=None, compare=False)


def parse_doc(obj: object, where: str) -> tuple[Doc, str]:
    """Validate one document object; returns the document and its split.

    Args:
        obj: the decoded JSON value of one line.
        where: ``"file:line"`` for error messages.

    Raises:
        ValueError: a missing or unknown key, a wrong type, fewer than two choices, or ``gold`` out of range.
    """
    if not isinstance(obj, dict):
        raise ValueError(f"{where}: expected a JSON object, got {type(obj).__name__}")
    unknown = sorted(set(obj) - set(DOC_KEYS))
    missing = [k for k in ("context", "choices", "gold") if k not in obj]
    if unknown or missing:
        raise ValueError(f"{where}: unknown key(s) {unknown} / missing key(s) {missing}; a document has {DOC_KEYS}")
    context, choices, gold, split = obj["context"], obj["choices"], obj["gold"], obj.get("split", "test")
    if not isinstance(context, str):
        raise ValueError(f"{where}: context must be a string, got {type(context).__name__}")
    if not isinstance(choices, list) or len(choices) < 2 or not all(isinstance(c, str) for c in choices):
        raise ValueError(f"{where}: choices must be a list of at least two strings, got {choices!r}")
    if isinstance(gold, bool) or not isinstance(gold, int) or not 0 <= gold < len(choices):
        raise ValueError(f"{where}: gold must be an index into the {len(choices)} choices, got {gold!r}")
    if split not in SPLITS:
        raise ValueError(f"{where}: split must be one of {SPLITS}, got {split!r}")
    return Doc(context, tuple(choices), gold), split


def parse_header(obj: dict, where: str) -> dict:
    """Validate a header line's ``task`` object; returns its settings.

    Raises:
        ValueError: a header that is not an object of string values with known keys.
    """
    if set(obj) != {"task"} or not isinstance(obj["task"], dict):
        raise ValueError(f'{where}: a header line is {{"task": {{...}}}} with nothing else')
    settings = obj["task"]
    unknown = sorted(set(settings) - set(HEADER_KEYS))
    if unknown:
        raise ValueError(f"{where}: unknown header key(s) {unknown}; expected some of {HEADER_KEYS}")
    for key, value in settings.items():
        if not isinstance(value, str):
            raise ValueError(f"{where}: header {key} must be a string, got {type(value).__name__}")
    return settings


def load_task(path: str | Path) -> Task:
    """Read a task file in the format of the module docstring.

    Args:
        path: a ``.jsonl`` file.

    Returns:
        The :class:`Task`.

    Raises:
        FileNotFoundError: no such file.
        ValueError: malformed JSON or a malformed line (the message names the line), or no evaluated document.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"task file not found: {path}")
    settings: dict = {}
    docs: list[Doc] = []
    pool: list[Doc] = []
    with path.open(encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            where = f"{path}:{number}"
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as err:
                raise ValueError(f"{where}: not valid JSON ({err.msg})") from None
            if isinstance(obj, dict) and "task" in obj:
                if docs or pool or settings:
                    raise ValueError(f"{where}: the task header must be the first line")
                settings = parse_header(obj, where)
                continue
            doc, split = parse_doc(obj, where)
            (pool if split == "fewshot" else docs).append(doc)
    if not docs:
        raise ValueError(f"{path}: no document to evaluate (every line is a header or in the fewshot split)")
    name = settings.pop("name", None) or path.name.removesuffix(".jsonl")
    return Task(name=name, docs=tuple(docs), fewshot_pool=tuple(pool), path=str(path), **settings)
