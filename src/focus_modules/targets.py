"""Target objects and question type of a question (Sec. 3.2 step I, Sec. 3.3, A.5).

FOCUS asks the MLLM itself, by in-context learning, which objects a question is about
(:data:`TARGET_EXAMPLES`, rendered by :func:`target_prompt`). The reply is parsed by
:func:`parse_targets`; when it names nothing usable, :func:`keyword_targets` reads the noun
phrases of the question instead. A target written as ``"all <objects>"`` or a counting
question ("how many", "count", "number of") makes the question type 2 (every instance must be
found); all other questions are type 1.

This module is plain text processing: it knows no model family.
"""

from __future__ import annotations

import re

# Few-shot examples of step I: (question, objects). One attribute question, one spatial
# relation between two objects, one counting question (type 2, marked by "all").
TARGET_EXAMPLES = (
    ("What is the color of the woman's umbrella?", "umbrella"),
    ("Is the red car on the left or right side of the white truck?", "red car, white truck"),
    ("How many birds are there on the roof?", "all birds"),
)
TARGET_INSTRUCTION = (
    "List the objects that must be found in the image to answer the question, separated by commas. "
    'Write "all" before an object when every one of them must be found.'
)
QUESTION_PREFIX = "Question: "
OBJECTS_PREFIX = "Objects:"

COUNTING = re.compile(r"\b(how many|count|counting|number of)\b", re.IGNORECASE)
ALL_PREFIX = re.compile(r"^all\s+(?:of\s+)?(?:the\s+)?", re.IGNORECASE)
ARTICLE = re.compile(r"^(?:a|an|the|any|some)\s+", re.IGNORECASE)
WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?", re.IGNORECASE)

# A parsed target longer than this is taken as a sentence, not an object name.
MAX_TARGET_WORDS = 6
MAX_TARGETS = 4

# Words that start a noun phrase in the keyword fallback.
DETERMINERS = frozenset({"the", "a", "an", "any", "this", "that", "these", "those", "all", "each", "every"})
# Words that end a noun phrase: prepositions, verbs, conjunctions, question words.
PHRASE_ENDS = frozenset(
    """
of to in on at by for from with without near next behind under above below over beside
between among into onto than and or but is are was were be been being do does did can could
has have had will would should which what who whose where when how why that this there it
its their his her left right side top bottom front back
""".split()
)
# Heads of phrases that name a property or a place, not an object.
NOT_OBJECTS = frozenset(
    """
color colour colors position positions location side shape material size number image picture
photo photograph scene kind type letter letters word words text brand direction relative
left right top bottom middle center centre front back option options answer
""".split()
)


def target_prompt(question: str) -> str:
    """The text of the step-I prompt for ``question`` (to be wrapped in a chat template)."""
    lines = [TARGET_INSTRUCTION]
    for example, objects in TARGET_EXAMPLES:
        lines += [QUESTION_PREFIX + example, f"{OBJECTS_PREFIX} {objects}"]
    lines += [QUESTION_PREFIX + question.strip(), OBJECTS_PREFIX]
    return "\n".join(lines)


def is_counting(question: str) -> bool:
    """Whether the question asks for a count (keyword rule, docs/design.md §6)."""
    return COUNTING.search(question) is not None


def split_all_prefix(target: str) -> tuple[str, bool]:
    """``"all red cars"`` -> ``("red cars", True)``; other targets come back unchanged."""
    stripped = ALL_PREFIX.sub("", target.strip())
    return stripped, stripped != target.strip()


def question_type(question: str, raw_targets: list[str]) -> int:
    """2 if a target starts with "all " or the question counts, else 1."""
    if is_counting(question) or any(split_all_prefix(t)[1] for t in raw_targets):
        return 2
    return 1


def normalize_targets(raw_targets: list[str]) -> tuple[list[str], int]:
    """Strip the "all " marker (and an article) from each target; returns the cleaned targets
    (empty ones dropped, duplicates removed) and whether any carried the marker (1 or 2)."""
    cleaned, marked = [], False
    for raw in raw_targets:
        target, has_all = split_all_prefix(raw)
        target = ARTICLE.sub("", target).strip()
        marked |= has_all
        if target and target.lower() not in (t.lower() for t in cleaned):
            cleaned.append(target)
    return cleaned, 2 if marked else 1


def parse_targets(reply: str, question: str) -> list[str]:
    """The objects named in a model's step-I reply, ``"all"`` markers kept.

    Reads the first non-empty line (dropping a repeated ``"Objects:"``), splits it at commas
    and semicolons, strips quotes, brackets and trailing punctuation, and keeps the parts
    that look like object names: at most :data:`MAX_TARGET_WORDS` words, not "none", and whose
    head noun (last word, plural folded) is a word of the question — a guard against objects
    the model made up ("red triangle" for "the red diamond" is dropped). Step I names objects
    *of the question*, so a part with words the question lacks is replaced by the question's
    own noun phrase with the same head (:func:`keyword_targets`): "blue diamond" for "the red
    diamond" becomes "red diamond", "white truck" for "the truck" becomes "truck"; the part is
    kept as written only when the question has no such phrase.
    Returns ``[]`` when nothing usable is left (the caller then uses :func:`keyword_targets`).
    """
    line = next((ln.strip() for ln in reply.splitlines() if ln.strip()), "")
    if line.lower().startswith(OBJECTS_PREFIX.lower()):
        line = line[len(OBJECTS_PREFIX) :]
    question_words = {_stem(w) for w in WORD.findall(question.lower())}
    targets = []
    for part in re.split(r"[,;]", line):
        part = re.sub(r"[\"`()\[\]{}<>*]", " ", part)
        part = re.sub(r"\s+", " ", part).strip(" .:!?'-")
        words = WORD.findall(part.lower())
        if not words or len(words) > MAX_TARGET_WORDS or part.lower() in ("none", "nothing", "no objects"):
            continue
        content = [w for w in words if w not in DETERMINERS]
        if not content or _stem(content[-1]) not in question_words:
            continue
        if not {_stem(w) for w in content} <= question_words:
            part = _grounded(part, content[-1], question)
        if part.lower() not in (t.lower() for t in targets):
            targets.append(part)
    return targets[:MAX_TARGETS]


def _grounded(part: str, head: str, question: str) -> str:
    """The question's own noun phrase with head noun ``head`` (the "all" marker kept from
    either side), or ``part`` itself when the question has none."""
    for phrase in keyword_targets(question):
        stripped, marked = split_all_prefix(phrase)
        if _stem(WORD.findall(stripped.lower())[-1]) == _stem(head):
            return ("all " if marked or split_all_prefix(part)[1] else "") + stripped
    return part


def keyword_targets(question: str) -> list[str]:
    """Noun phrases of the question, as a fallback when the model's reply cannot be parsed.

    A phrase starts after a determiner ("the", "a", ...) and ends before a preposition, verb,
    conjunction or punctuation; phrases whose last word names a property or a place ("color",
    "position", "side", ...) are dropped. A counting question ("how many X", "number of X")
    returns only the counted objects, marked with "all ".
    """
    text = question.strip()
    counted = re.search(r"\b(?:how many|number of)\s+([a-z][a-z\s'-]*)", text, re.IGNORECASE)
    if counted:
        phrase = _phrase(WORD.findall(counted.group(1)))
        return [f"all {phrase}"] if phrase else []
    targets = []
    for clause in re.split(r"[,.;:?!()]", text):
        words = WORD.findall(clause)
        for i, word in enumerate(words):
            if word.lower() in DETERMINERS:
                phrase = _phrase(words[i + 1 :])
                if phrase and phrase.lower() not in (t.lower() for t in targets):
                    targets.append(phrase)
    return targets[:MAX_TARGETS]


def _phrase(words: list[str]) -> str:
    """The noun phrase at the start of ``words``, or "" if it names no object."""
    phrase = []
    for word in words:
        if word.lower() in PHRASE_ENDS or word.lower() in DETERMINERS:
            break
        phrase.append(word)
    phrase = phrase[:MAX_TARGET_WORDS]
    if not phrase or phrase[-1].lower() in NOT_OBJECTS:
        return ""
    return " ".join(phrase)


def _stem(word: str) -> str:
    """Crude plural folding so "birds" in a reply matches "bird" in a question."""
    word = word.lower().removesuffix("'s")
    for suffix in ("ies", "es", "s"):
        if word.endswith(suffix) and len(word) > len(suffix) + 2:
            return word[: -len(suffix)] + ("y" if suffix == "ies" else "")
    return word
