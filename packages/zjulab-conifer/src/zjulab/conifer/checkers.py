"""Verifiable constraint checkers: the 25 IFEval instruction types, as an extensible registry.

A checker is a function ``fn(response, **kwargs) -> bool``. The registry validates the keyword
arguments (``None`` values are dropped, as in the Hugging Face copy of IFEval), and runs a
checker in one of two modes, as IFEval defines them:

* ``strict``: the response as written (an empty response never follows an instruction);
* ``loose``: the instruction counts as followed if *any* of eight variants follows it: the
  response, without its first line, without its last line, without both, and each of those
  four with every ``*`` removed (markdown emphasis is forgiven).

Users add their own types with :meth:`CheckerRegistry.register`, for example a checker for a
constraint that the pipeline's format/number stage attaches to instructions.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import logging
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from zjulab.conifer.errors import ConiferConfigError, InstructionArgumentError, UnknownInstructionError
from zjulab.conifer.language import detect_language, supported_languages
from zjulab.conifer.sentences import count_sentences, count_words, word_tokens

__all__ = [
    "CheckFn",
    "CheckMode",
    "CheckerRegistry",
    "ConstraintCheck",
    "InstructionSpec",
    "default_registry",
    "loose_variants",
]

logger = logging.getLogger(__name__)

CheckFn = Callable[..., bool]
CheckMode = Literal["strict", "loose"]
Relation = Literal["less than", "at least"]


@dataclass(frozen=True)
class InstructionSpec:
    """One registered instruction type.

    Attributes:
        id: Identifier, e.g. ``"length_constraints:number_words"``.
        fn: ``fn(response, **kwargs) -> bool``.
        params: Keyword arguments the checker accepts.
        required: Keyword arguments it cannot do without.
        description: One line telling a person what the instruction demands.
        uses_prompt: The checker also receives the prompt as ``prompt`` (when not given).
        types: Per argument, a validator ``value -> value`` that raises ``ValueError`` (with
            what it expected) on a value of the wrong type or range; arguments without one are
            passed as given.
    """

    id: str
    fn: CheckFn
    params: tuple[str, ...] = ()
    required: tuple[str, ...] = ()
    description: str = ""
    uses_prompt: bool = False
    types: Mapping[str, Callable[[Any], Any]] = dataclasses.field(default_factory=dict)


@dataclass(frozen=True)
class ConstraintCheck:
    """An instruction id with its arguments (one verifiable constraint of one prompt)."""

    id: str
    kwargs: Mapping[str, Any]

    def to_dict(self) -> dict[str, Any]:
        """Plain-dict form for JSON."""
        return {"id": self.id, "kwargs": dict(self.kwargs)}


def loose_variants(response: str) -> list[str]:
    """The eight response variants of IFEval's loose mode (see module docstring)."""
    lines = response.split("\n")
    first = "\n".join(lines[1:]).strip()
    last = "\n".join(lines[:-1]).strip()
    both = "\n".join(lines[1:-1]).strip()
    base = [response, first, last, both]
    return [response, response.replace("*", ""), first, last, both] + [v.replace("*", "") for v in base[1:]]


class CheckerRegistry:
    """A mapping from instruction id to checker, with strict and loose evaluation."""

    def __init__(self, specs: Iterable[InstructionSpec] = ()) -> None:
        self._specs: dict[str, InstructionSpec] = {}
        for spec in specs:
            self._add(spec, replace=False)

    def _add(self, spec: InstructionSpec, *, replace: bool) -> None:
        if not replace and spec.id in self._specs:
            raise ConiferConfigError(f"instruction {spec.id!r} is already registered (pass replace=True)")
        missing = set(spec.required) - set(spec.params)
        if missing:
            raise ConiferConfigError(f"instruction {spec.id!r}: required {sorted(missing)} not in params")
        self._specs[spec.id] = spec

    def register(
        self,
        instruction_id: str,
        fn: CheckFn | None = None,
        *,
        params: Iterable[str] = (),
        required: Iterable[str] | None = None,
        description: str = "",
        uses_prompt: bool = False,
        types: Mapping[str, Callable[[Any], Any]] | None = None,
        replace: bool = False,
    ) -> Any:
        """Register a checker; usable directly or as a decorator.

        Args:
            instruction_id: The id prompts refer to.
            fn: ``fn(response, **kwargs) -> bool``; omit to use as a decorator.
            params: Keyword arguments it accepts.
            required: Those it needs (default: all of ``params``).
            description: What the instruction asks, for tables and prompts.
            uses_prompt: Pass the prompt text as ``prompt`` when kwargs lack it.
            types: Validators per argument (see :class:`InstructionSpec`).
            replace: Allow overwriting an existing id.

        Returns:
            ``fn`` (or the decorator).

        Raises:
            ConiferConfigError: The id exists and ``replace`` is false.
        """
        params_t = tuple(params)
        req_t = tuple(params_t if required is None else required)

        def deco(f: CheckFn) -> CheckFn:
            self._add(
                InstructionSpec(
                    instruction_id, f, params_t, req_t, description, uses_prompt, dict(types or {})
                ),
                replace=replace,
            )
            return f

        return deco(fn) if fn is not None else deco

    def __contains__(self, instruction_id: object) -> bool:
        return instruction_id in self._specs

    def __len__(self) -> int:
        return len(self._specs)

    def ids(self) -> list[str]:
        """Registered ids, sorted."""
        return sorted(self._specs)

    def get(self, instruction_id: str) -> InstructionSpec:
        """The spec of ``instruction_id``.

        Raises:
            UnknownInstructionError: Not registered.
        """
        try:
            return self._specs[instruction_id]
        except KeyError:
            raise UnknownInstructionError(
                f"unknown instruction id {instruction_id!r}; registered: {', '.join(self.ids())}"
            ) from None

    def copy(self) -> CheckerRegistry:
        """An independent registry with the same checkers."""
        return CheckerRegistry(self._specs.values())

    def _kwargs(self, spec: InstructionSpec, kwargs: Mapping[str, Any] | None, prompt: str) -> dict[str, Any]:
        kw = {k: v for k, v in (kwargs or {}).items() if v is not None}
        if spec.uses_prompt and "prompt" in spec.params and "prompt" not in kw and prompt:
            kw["prompt"] = prompt
        unknown = set(kw) - set(spec.params)
        if unknown:
            raise InstructionArgumentError(
                f"{spec.id}: unexpected argument(s) {sorted(unknown)}; accepted: {list(spec.params)}"
            )
        missing = [p for p in spec.required if p not in kw]
        if missing:
            raise InstructionArgumentError(f"{spec.id}: missing argument(s) {missing}")
        for key, validate in spec.types.items():
            if key in kw:
                try:
                    kw[key] = validate(kw[key])
                except ValueError as exc:
                    raise InstructionArgumentError(f"{spec.id}: argument {key!r}: {exc}") from None
        for key, other in (("nth_paragraph", "num_paragraphs"),):
            if key in spec.types and key in kw and other in kw and kw[key] > kw[other]:
                raise InstructionArgumentError(
                    f"{spec.id}: argument {key!r}: {kw[key]} is more than {other}={kw[other]}"
                )
        return kw

    def validate(
        self, instruction_id: str, kwargs: Mapping[str, Any] | None = None, *, prompt: str = ""
    ) -> dict[str, Any]:
        """The arguments as the checker will get them, after checking types and ranges.

        Raises:
            UnknownInstructionError: ``instruction_id`` is not registered.
            InstructionArgumentError: Missing, unexpected or invalid arguments (the message
                names the instruction id and the argument).
        """
        return self._kwargs(self.get(instruction_id), kwargs, prompt)

    def check(
        self,
        instruction_id: str,
        response: str,
        kwargs: Mapping[str, Any] | None = None,
        *,
        mode: CheckMode = "strict",
        prompt: str = "",
    ) -> bool:
        """Whether ``response`` follows one instruction.

        Args:
            instruction_id: A registered id.
            response: The model's answer.
            kwargs: The instruction's arguments (``None`` values are ignored).
            mode: ``"strict"`` or ``"loose"`` (see the module docstring).
            prompt: The prompt, for checkers that need it (``combination:repeat_prompt``).

        Raises:
            UnknownInstructionError: ``instruction_id`` is not registered.
            InstructionArgumentError: Missing or unexpected arguments, or values the checker
                cannot use.
            ConiferConfigError: ``mode`` is neither strict nor loose.
        """
        if mode not in ("strict", "loose"):
            raise ConiferConfigError(f"mode must be 'strict' or 'loose', got {mode!r}")
        if not isinstance(response, str):
            raise InstructionArgumentError(f"response must be a string, got {type(response).__name__}")
        spec = self.get(instruction_id)
        kw = self._kwargs(spec, kwargs, prompt)
        candidates = [response] if mode == "strict" else list(dict.fromkeys(loose_variants(response)))
        try:
            return any(c.strip() and spec.fn(c, **kw) for c in candidates)
        except (TypeError, ValueError, KeyError, re.error) as exc:
            raise InstructionArgumentError(f"{instruction_id} with {kw}: {exc}") from exc


# ---------------------------------------------------------------------------------------------
# The IFEval instruction types. Each follows the reference definition; comments note the
# counting rule where it is not obvious.
# ---------------------------------------------------------------------------------------------


# Argument validators, after IFEval's definitions of each instruction's arguments.


def _int(minimum: int = 1) -> Callable[[Any], int]:
    def check(value: Any) -> int:
        if isinstance(value, float) and value.is_integer():
            value = int(value)  # JSON exports through pandas turn ints into floats
        if not isinstance(value, int) or isinstance(value, bool):
            raise ValueError(f"expected an integer >= {minimum}, got {value!r} ({type(value).__name__})")
        if value < minimum:
            raise ValueError(f"expected an integer >= {minimum}, got {value}")
        return value

    return check


def _text(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"expected a non-empty string, got {value!r} ({type(value).__name__})")
    return value


def _word(value: Any) -> str:
    value = _text(value)
    if len(value.split()) != 1:
        raise ValueError(f"expected a single word, got {value!r}")
    return value


def _words(value: Any) -> list[str]:
    if isinstance(value, str) or not isinstance(value, (list, tuple)) or not value:
        raise ValueError(f"expected a non-empty list of strings, got {value!r} ({type(value).__name__})")
    for item in value:
        if not isinstance(item, str) or not item.strip():
            raise ValueError(f"expected a list of non-empty strings, got the item {item!r}")
    return list(value)


def _relation(value: Any) -> str:
    if value not in ("less than", "at least"):
        raise ValueError(f"expected 'less than' or 'at least', got {value!r}")
    return str(value)


def _letter(value: Any) -> str:
    value = _text(value).strip()
    if len(value) != 1:
        raise ValueError(f"expected a single character, got {value!r}")
    return value


def _language(value: Any) -> str:
    value = _text(value)
    if not re.fullmatch(r"[a-z]{2,3}(-[a-z]{2,4})?", value):
        raise ValueError(f"expected an ISO 639-1 language code such as 'en', got {value!r}")
    known = supported_languages()
    if value not in known:  # the detector never answers it: the check could never pass
        raise ValueError(
            f"expected a language code the detector knows ({', '.join(sorted(known))}), got {value!r}"
        )
    return value


def _compare(value: int, threshold: Any, relation: str) -> bool:
    if relation == "less than":
        return value < int(threshold)
    if relation == "at least":
        return value >= int(threshold)
    raise ValueError(f"relation must be 'less than' or 'at least', got {relation!r}")


def _keywords_existence(response: str, keywords: list[str]) -> bool:
    return all(re.search(re.escape(k), response, flags=re.IGNORECASE) for k in keywords)


def _keywords_frequency(response: str, keyword: str, frequency: int, relation: str) -> bool:
    # Substring occurrences, case-insensitive (``cat`` is found in ``category``).
    count = len(re.findall(re.escape(keyword.strip()), response, flags=re.IGNORECASE))
    return _compare(count, frequency, relation)


def _forbidden_words(response: str, forbidden_words: list[str]) -> bool:
    return not any(
        re.search(r"\b" + re.escape(w) + r"\b", response, flags=re.IGNORECASE) for w in set(forbidden_words)
    )


def _letter_frequency(response: str, letter: str, let_frequency: int, let_relation: str) -> bool:
    # The reference replaces a non-letter (IFEval has one prompt asking for "#") by a random
    # letter; here any single character is counted as given.
    letter = letter.strip().lower()
    if len(letter) != 1:
        raise ValueError(f"letter must be a single character, got {letter!r}")
    return _compare(collections.Counter(response.lower())[letter], let_frequency, let_relation)


def _response_language(response: str, language: str) -> bool:
    found = detect_language(response)
    return found is None or found == language


def _number_sentences(response: str, num_sentences: int, relation: str) -> bool:
    return _compare(count_sentences(response), num_sentences, relation)


def _number_paragraphs(response: str, num_paragraphs: int) -> bool:
    # Paragraphs are separated by the markdown divider ``***``; an empty paragraph is allowed
    # only before the first or after the last divider.
    parts = re.split(r"\s?\*\*\*\s?", response)
    count = len(parts)
    for i, part in enumerate(parts):
        if not part.strip():
            if i in (0, len(parts) - 1):
                count -= 1
            else:
                return False
    return count == int(num_paragraphs)


def _number_words(response: str, num_words: int, relation: str) -> bool:
    return _compare(count_words(response), num_words, relation)


def _nth_paragraph_first_word(
    response: str, num_paragraphs: int, nth_paragraph: int, first_word: str
) -> bool:
    # Paragraphs are separated by a blank line ("\n\n"); the first word is compared in lower
    # case, without leading quotes and up to the first punctuation mark.
    parts = response.split("\n\n")
    count = sum(1 for p in parts if p.strip())
    nth = int(nth_paragraph)
    if nth > count:
        return False
    paragraph = parts[nth - 1].strip()
    if not paragraph:
        return False
    word = paragraph.split()[0].strip().lstrip("'").lstrip('"')
    first = ""
    for ch in word:
        if ch in ".,?!'\"":
            break
        first += ch.lower()
    return count == int(num_paragraphs) and first == first_word.lower()


def _number_placeholders(response: str, num_placeholders: int) -> bool:
    return len(re.findall(r"\[.*?\]", response)) >= int(num_placeholders)


def _postscript(response: str, postscript_marker: str) -> bool:
    text = response.lower()
    if postscript_marker == "P.P.S":
        pattern = r"\s*p\.\s?p\.\s?s.*$"
    elif postscript_marker == "P.S.":
        pattern = r"\s*p\.\s?s\..*$"
    else:
        pattern = r"\s*" + re.escape(postscript_marker.lower()) + r".*$"
    return bool(re.findall(pattern, text, flags=re.MULTILINE))


def _number_bullet_lists(response: str, num_bullets: int) -> bool:
    # Lines starting with "* " (not "**") or with "-" count as bullets; the count must match.
    stars = re.findall(r"^\s*\*[^\*].*$", response, flags=re.MULTILINE)
    dashes = re.findall(r"^\s*-.*$", response, flags=re.MULTILINE)
    return len(stars) + len(dashes) == int(num_bullets)


_CONSTRAINED_OPTIONS = ("My answer is yes.", "My answer is no.", "My answer is maybe.")


def _constrained_response(response: str) -> bool:
    text = response.strip()
    return any(option in text for option in _CONSTRAINED_OPTIONS)


def _number_highlighted_sections(response: str, num_highlights: int) -> bool:
    # Both *single* and **double** emphasis count; each match must have non-blank content.
    single = [h for h in re.findall(r"\*[^\n\*]*\*", response) if h.strip("*").strip()]
    double = [h for h in re.findall(r"\*\*[^\n\*]*\*\*", response) if h[2:-2].strip()]
    return len(single) + len(double) >= int(num_highlights)


def _multiple_sections(response: str, section_spliter: str, num_sections: int) -> bool:
    parts = re.split(r"\s?" + re.escape(section_spliter.strip()) + r"\s?\d+\s?", response)
    return len(parts) - 1 >= int(num_sections)


def _json_format(response: str) -> bool:
    text = response.strip()
    for prefix in ("```json", "```Json", "```JSON", "```"):
        if text.startswith(prefix):
            text = text[len(prefix) :]
            break
    if text.endswith("```"):
        text = text[:-3]
    try:
        json.loads(text.strip())
    except ValueError:
        return False
    return True


def _title(response: str) -> bool:
    return any(t.lstrip("<").rstrip(">").strip() for t in re.findall(r"<<[^\n]+>>", response))


def _two_responses(response: str) -> bool:
    parts = response.split("******")
    valid = []
    for i, part in enumerate(parts):
        if not part.strip():
            if i not in (0, len(parts) - 1):
                return False
        else:
            valid.append(part)
    return len(valid) == 2 and valid[0].strip() != valid[1].strip()


def _repeat_prompt(response: str, prompt_to_repeat: str) -> bool:
    return response.strip().lower().startswith(prompt_to_repeat.strip().lower())


def _end_checker(response: str, end_phrase: str) -> bool:
    return response.strip().strip('"').lower().endswith(end_phrase.strip().lower())


def _quotation(response: str) -> bool:
    text = response.strip()
    return len(text) > 1 and text[0] == '"' and text[-1] == '"'


def _capital_word_frequency(response: str, capital_frequency: int, capital_relation: str) -> bool:
    count = sum(1 for w in word_tokens(response) if w.isupper())
    return _compare(count, capital_frequency, capital_relation)


def _english_capital(response: str) -> bool:
    if not response.isupper():
        return False
    lang = detect_language(response)
    return lang is None or lang == "en"


def _english_lowercase(response: str) -> bool:
    if not response.islower():
        return False
    lang = detect_language(response)
    return lang is None or lang == "en"


def _no_comma(response: str) -> bool:
    return "," not in response


_IFEVAL: list[InstructionSpec] = [
    InstructionSpec(
        "keywords:existence",
        _keywords_existence,
        ("keywords",),
        ("keywords",),
        "Include the keywords {keywords}.",
        types={"keywords": _words},
    ),
    InstructionSpec(
        "keywords:frequency",
        _keywords_frequency,
        ("keyword", "frequency", "relation"),
        ("keyword", "frequency", "relation"),
        "The word {keyword} appears {relation} {frequency} times.",
        types={"keyword": _text, "frequency": _int(1), "relation": _relation},
    ),
    InstructionSpec(
        "keywords:forbidden_words",
        _forbidden_words,
        ("forbidden_words",),
        ("forbidden_words",),
        "Do not use the words {forbidden_words}.",
        types={"forbidden_words": _words},
    ),
    InstructionSpec(
        "keywords:letter_frequency",
        _letter_frequency,
        ("letter", "let_frequency", "let_relation"),
        ("letter", "let_frequency", "let_relation"),
        "The letter {letter} appears {let_relation} {let_frequency} times.",
        types={"letter": _letter, "let_frequency": _int(1), "let_relation": _relation},
    ),
    InstructionSpec(
        "language:response_language",
        _response_language,
        ("language",),
        ("language",),
        "Answer in the language {language} only.",
        types={"language": _language},
    ),
    InstructionSpec(
        "length_constraints:number_sentences",
        _number_sentences,
        ("num_sentences", "relation"),
        ("num_sentences", "relation"),
        "Answer with {relation} {num_sentences} sentences.",
        types={"num_sentences": _int(1), "relation": _relation},
    ),
    InstructionSpec(
        "length_constraints:number_paragraphs",
        _number_paragraphs,
        ("num_paragraphs",),
        ("num_paragraphs",),
        "Write exactly {num_paragraphs} paragraphs separated by ***.",
        types={"num_paragraphs": _int(1)},
    ),
    InstructionSpec(
        "length_constraints:number_words",
        _number_words,
        ("num_words", "relation"),
        ("num_words", "relation"),
        "Answer with {relation} {num_words} words.",
        types={"num_words": _int(1), "relation": _relation},
    ),
    InstructionSpec(
        "length_constraints:nth_paragraph_first_word",
        _nth_paragraph_first_word,
        ("num_paragraphs", "nth_paragraph", "first_word"),
        ("num_paragraphs", "nth_paragraph", "first_word"),
        "Write {num_paragraphs} paragraphs separated by blank lines; paragraph {nth_paragraph} starts with {first_word}.",
        types={"num_paragraphs": _int(1), "nth_paragraph": _int(1), "first_word": _word},
    ),
    InstructionSpec(
        "detectable_content:number_placeholders",
        _number_placeholders,
        ("num_placeholders",),
        ("num_placeholders",),
        "Include at least {num_placeholders} placeholders in square brackets, like [address].",
        types={"num_placeholders": _int(1)},
    ),
    InstructionSpec(
        "detectable_content:postscript",
        _postscript,
        ("postscript_marker",),
        ("postscript_marker",),
        "End with a postscript starting with {postscript_marker}.",
        types={"postscript_marker": _text},
    ),
    InstructionSpec(
        "detectable_format:number_bullet_lists",
        _number_bullet_lists,
        ("num_bullets",),
        ("num_bullets",),
        "Use exactly {num_bullets} markdown bullet points.",
        types={"num_bullets": _int(1)},
    ),
    InstructionSpec(
        "detectable_format:constrained_response",
        _constrained_response,
        (),
        (),
        "Answer with one of: My answer is yes. / My answer is no. / My answer is maybe.",
    ),
    InstructionSpec(
        "detectable_format:number_highlighted_sections",
        _number_highlighted_sections,
        ("num_highlights",),
        ("num_highlights",),
        "Highlight at least {num_highlights} sections with markdown, like *highlighted section*.",
        types={"num_highlights": _int(1)},
    ),
    InstructionSpec(
        "detectable_format:multiple_sections",
        _multiple_sections,
        ("section_spliter", "num_sections"),
        ("section_spliter", "num_sections"),
        "Write {num_sections} sections, each starting with '{section_spliter} X'.",
        types={"section_spliter": _text, "num_sections": _int(1)},
    ),
    InstructionSpec("detectable_format:json_format", _json_format, (), (), "Wrap the whole answer in JSON."),
    InstructionSpec(
        "detectable_format:title", _title, (), (), "Give a title in double angular brackets, like <<title>>."
    ),
    InstructionSpec(
        "combination:two_responses",
        _two_responses,
        (),
        (),
        "Give two different answers separated by six asterisks ******.",
    ),
    InstructionSpec(
        "combination:repeat_prompt",
        _repeat_prompt,
        ("prompt_to_repeat",),
        ("prompt_to_repeat",),
        "First repeat the request word for word, then answer.",
        types={"prompt_to_repeat": _text},
    ),
    InstructionSpec(
        "startend:end_checker",
        _end_checker,
        ("end_phrase",),
        ("end_phrase",),
        "Finish with the exact phrase {end_phrase}.",
        types={"end_phrase": _text},
    ),
    InstructionSpec(
        "startend:quotation", _quotation, (), (), "Wrap the whole answer in double quotation marks."
    ),
    InstructionSpec(
        "change_case:capital_word_frequency",
        _capital_word_frequency,
        ("capital_frequency", "capital_relation"),
        ("capital_frequency", "capital_relation"),
        "Use {capital_relation} {capital_frequency} words in all capital letters.",
        types={"capital_frequency": _int(1), "capital_relation": _relation},
    ),
    InstructionSpec(
        "change_case:english_capital", _english_capital, (), (), "Answer in English, in capital letters only."
    ),
    InstructionSpec(
        "change_case:english_lowercase",
        _english_lowercase,
        (),
        (),
        "Answer in English, in lowercase letters only.",
    ),
    InstructionSpec("punctuation:no_comma", _no_comma, (), (), "Do not use any commas."),
]


def default_registry() -> CheckerRegistry:
    """A fresh registry holding the 25 IFEval instruction types (safe to extend)."""
    return CheckerRegistry(_IFEVAL)
