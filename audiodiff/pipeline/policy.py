"""A configurable prompt filter: words, regular expressions and an optional classifier hook, checked before any
generation. Off unless a policy is given (`AudioDiffusionPipeline.prompt_policy`, `prompt_policy=<file>` for the
generate command and the web page).

A policy file is JSON or YAML (read as data: it can name no code to run):

    rules:
      - name: weapons                 # named in every refusal
        words: [gunshot, rifle]       # whole words or phrases, any case
        patterns: ['\\bshoot(s|ing)?\\b']   # Python regular expressions, searched case-insensitively
    words: [scream]                   # rules without a name are named by their word or pattern

A classifier (any callable: prompt → None to allow, or a reason to refuse) can be added from Python only.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

Classifier = Callable[[str], str | None]  # prompt → None (allowed) or the reason it is refused


class PromptRefused(ValueError):
    """A prompt the policy refuses; the message names the rule."""


@dataclass(frozen=True)
class Rule:
    """One word or pattern of a named rule."""

    name: str
    kind: str  # "word" | "pattern"
    text: str
    regex: re.Pattern[str]

    def describe(self) -> str:
        own = f'{self.kind} "{self.text}"'
        return own if self.name == own else f'rule "{self.name}" ({own})'


class PromptPolicy:
    """Refuses prompts that contain a listed word or phrase (whole words, any case), match a pattern (searched,
    case-insensitive) or that `classifier` rejects. `source` names where the rules came from in messages."""

    def __init__(self, rules: Iterable[Rule] = (), classifier: Classifier | None = None, source: str = "") -> None:
        self.rules = tuple(rules)
        self.classifier = classifier
        self.source = source

    @classmethod
    def from_lists(cls, words: Iterable[str] = (), patterns: Iterable[str] = (), name: str | None = None,
                   classifier: Classifier | None = None, source: str = "") -> PromptPolicy:
        """A policy of `words` and `patterns` (one rule called `name`, or each named by itself)."""
        return cls(_rules(name, list(words), list(patterns), source or "the policy"), classifier, source)

    @classmethod
    def from_file(cls, path: str | Path) -> PromptPolicy:
        """Read a JSON (.json) or YAML (.yaml / .yml) policy file (module docstring); ValueError naming the file and
        the first problem."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"prompt_policy: {path} does not exist")
        text = path.read_text(encoding="utf-8")
        try:
            if path.suffix == ".json":
                data = json.loads(text)
            elif path.suffix in (".yaml", ".yml"):
                import yaml

                data = yaml.safe_load(text)
            else:
                raise ValueError(f"{path}: expected a .json, .yaml or .yml policy file")
        except (json.JSONDecodeError, ImportError) as err:
            raise ValueError(f"{path}: not a readable policy ({err})") from err
        except Exception as err:  # yaml's own errors
            if isinstance(err, ValueError):
                raise
            raise ValueError(f"{path}: not valid YAML ({err})") from err
        if not isinstance(data, dict):
            raise ValueError(f"{path}: expected a mapping with 'rules', 'words' or 'patterns', got "
                             f"{type(data).__name__}")
        unknown = sorted(set(data) - {"rules", "words", "patterns"})
        if unknown:
            raise ValueError(f"{path}: unknown key(s) {unknown}; expected some of ['patterns', 'rules', 'words']")
        rules: list[Rule] = _rules(None, _texts(data.get("words"), f"{path}: words"),
                                   _texts(data.get("patterns"), f"{path}: patterns"), str(path))
        named = data.get("rules") or []
        if not isinstance(named, list):
            raise ValueError(f"{path}: rules: expected a list of {{name, words, patterns}}, got {named!r}")
        for i, rule in enumerate(named):
            where = f"{path}: rules[{i}]"
            if not isinstance(rule, dict) or not isinstance(rule.get("name"), str) or not rule["name"].strip():
                raise ValueError(f"{where}: expected a mapping with a non-empty 'name', got {rule!r}")
            extra = sorted(set(rule) - {"name", "words", "patterns"})
            if extra:
                raise ValueError(f"{where}: unknown key(s) {extra}; expected name, words, patterns")
            rules += _rules(rule["name"], _texts(rule.get("words"), f"{where}.words"),
                            _texts(rule.get("patterns"), f"{where}.patterns"), where)
        return cls(rules, source=str(path))

    def violation(self, prompt: str) -> str | None:
        """What refuses `prompt` ("rule "weapons" (word "rifle")"), or None when it is allowed."""
        for rule in self.rules:
            if rule.regex.search(prompt):
                return rule.describe()
        if self.classifier is not None:
            reason = self.classifier(prompt)
            if reason:
                return f'rule "classifier" ({reason})'
        return None

    def check(self, prompt: str, where: str = "prompt") -> None:
        """Raise PromptRefused naming `where` and the rule when `prompt` is refused."""
        found = self.violation(prompt)
        if found is not None:
            origin = f" of {self.source}" if self.source else ""
            raise PromptRefused(f"{where}: refused by the prompt policy{origin}: {found}")


def _texts(value: Any, where: str) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
        raise ValueError(f"{where}: expected a list of non-empty texts, got {value!r}")
    return value


def _rules(name: str | None, words: list[str], patterns: list[str], where: str) -> list[Rule]:
    rules = []
    for word in words:
        phrase = r"\s+".join(re.escape(part) for part in word.split())
        rules.append(Rule(name or f'word "{word}"', "word", word,
                          re.compile(rf"(?<!\w){phrase}(?!\w)", re.IGNORECASE)))
    for pattern in patterns:
        try:
            regex = re.compile(pattern, re.IGNORECASE)
        except re.error as err:
            raise ValueError(f"{where}: pattern {pattern!r} is not a valid regular expression ({err})") from None
        rules.append(Rule(name or f'pattern "{pattern}"', "pattern", pattern, regex))
    return rules
