"""PII redaction of teacher-log inputs: pure functions, rules per task.

A task turns it on with a ``[privacy]`` section; inputs are then redacted before they are
curated (so before they can enter ``examples``, ``review.queue`` or a gold set), and the raw
input is never written to the training pool::

    [privacy]
    rules = ["email", "card", "phone", "iban"]     # the built-in rules to apply
    replacement = "[{rule}]"                       # what a match becomes ({rule}: its name, upper case)
    [privacy.custom]                               # more rules: name = regular expression
    employee_id = 'EMP-\\d{6}'

Built-in rules, applied in this order (an earlier rule's replacement is never matched again):

* ``email``: local@domain.tld.
* ``iban``: two letters, two check digits and 11 to 30 letters or digits (spaces allowed in
  groups), accepted only when the ISO 13616 mod-97 check gives 1.
* ``card``: 13 to 19 digits (single spaces or dashes between them), accepted only when the
  Luhn check passes: a 16-digit order number that fails Luhn stays.
* ``phone``: 9 to 15 digits (E.164's most) with an international ``+`` prefix, a leading 0,
  a bracketed area code, or at least two separators (``555-123-4567``); a bare run of digits
  that starts otherwise is left alone (amounts, references).

Custom rules are Python regular expressions, matched as they are.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Callable

from kernel import fields

BUILTIN = ("email", "iban", "card", "phone")

_EMAIL = re.compile(r"(?<![\w.+-])[A-Za-z0-9][A-Za-z0-9._%+-]{0,63}@(?:[A-Za-z0-9-]{1,63}\.)+[A-Za-z]{2,24}(?![\w-])")
_IBAN = re.compile(r"(?<![A-Za-z0-9])[A-Z]{2}\d{2}(?:[ ]?[A-Z0-9]){11,30}(?![A-Za-z0-9])")
_CARD = re.compile(r"(?<![\d-])\d(?:[ -]?\d){12,18}(?![\d])")
_PHONE = re.compile(r"(?<![\w+])(?:\+|\(|0)?[\d(][\d ().\-]{7,22}\d(?![\d])")


def luhn_ok(digits: str) -> bool:
    """The Luhn check of a string of digits (payment card numbers)."""
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def iban_ok(candidate: str) -> bool:
    """ISO 13616: move the first four characters to the end, letters to 10..35, mod 97 == 1."""
    s = candidate.replace(" ", "")
    if not 15 <= len(s) <= 34 or not s[:2].isalpha() or not s[2:4].isdigit():
        return False
    rearranged = s[4:] + s[:4]
    try:
        number = int("".join(str(int(c, 36)) for c in rearranged))
    except ValueError:
        return False
    return number % 97 == 1


def _card(match: re.Match) -> bool:
    digits = re.sub(r"[ -]", "", match.group(0))
    return 13 <= len(digits) <= 19 and luhn_ok(digits)


def _phone(match: re.Match) -> bool:
    text = match.group(0)
    digits = re.sub(r"\D", "", text)
    if not 9 <= len(digits) <= 15 or text.count("(") != text.count(")"):
        return False
    start = text[0]
    separators = len(re.findall(r"[ .\-]+", text.strip()))
    return start in "+(0" or separators >= 2


def _always(_match: re.Match) -> bool:
    return True


@dataclass(frozen=True)
class Rule:
    name: str
    pattern: re.Pattern
    accept: Callable[[re.Match], bool] = _always


_BUILTIN_RULES = {
    "email": Rule("email", _EMAIL),
    "iban": Rule("iban", _IBAN, lambda m: iban_ok(m.group(0))),
    "card": Rule("card", _CARD, _card),
    "phone": Rule("phone", _PHONE, _phone),
}


@dataclass(frozen=True)
class Privacy:
    """A task's redaction rules, in the order they apply."""

    rules: tuple[Rule, ...] = ()
    replacement: str = "[{rule}]"
    # what each rule's matches become, built once (redact runs on every curated event)
    tokens: tuple[str, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "tokens", tuple(self.replacement.replace("{rule}", r.name.upper())
                                                 for r in self.rules))

    @property
    def enabled(self) -> bool:
        return bool(self.rules)

    @property
    def rule_names(self) -> tuple[str, ...]:
        return tuple(r.name for r in self.rules)

    def redact(self, text: str) -> tuple[str, dict[str, int]]:
        """(redacted text, {rule: matches replaced}); rules with no match are left out."""
        counts: dict[str, int] = {}
        for rule, token in zip(self.rules, self.tokens):
            n = 0

            def sub(m: re.Match, rule=rule, token=token) -> str:
                nonlocal n
                if rule.accept(m):
                    n += 1
                    return token
                return m.group(0)

            text = rule.pattern.sub(sub, text)
            if n:
                counts[rule.name] = n
        return text, counts


OFF = Privacy()


def privacy_config(task) -> Privacy:
    """The [privacy] section of a task (kernel.tasks.TaskConfig), validated: a mistake names
    the file, the key and the fix. No section, or no rules: redaction off."""
    raw = task.section("privacy")
    file = task.source
    if not raw:
        return OFF
    fields.unknown_keys(file, "privacy", raw, {"rules", "custom", "replacement"})
    names = raw.get("rules", [])
    if not isinstance(names, list) or not all(isinstance(x, str) for x in names):
        raise fields.TaskConfigError(file, "privacy.rules", f'must be a list of rule names from {list(BUILTIN)}, '
                                                            f'e.g. rules = ["email", "card"]; got {names!r}')
    rules = []
    for name in names:
        fields.choice(file, "privacy.rules", name, BUILTIN)
        if name in [r.name for r in rules]:
            raise fields.TaskConfigError(file, "privacy.rules", f"names {name!r} twice; list each rule once")
        rules.append(_BUILTIN_RULES[name])
    rules.sort(key=lambda r: BUILTIN.index(r.name))  # the documented order, whatever the file's
    custom = raw.get("custom", {})
    if not isinstance(custom, dict):
        raise fields.TaskConfigError(file, "privacy.custom", "must be a table of name = 'regular expression', "
                                                             "e.g. [privacy.custom] employee_id = 'EMP-\\d{6}'")
    for name, pattern in custom.items():
        key = f"privacy.custom.{name}"
        if name in BUILTIN:
            raise fields.TaskConfigError(file, key, f"{name!r} is a built-in rule: add it to privacy.rules, "
                                                    "or give the custom rule another name")
        pattern = fields.string(file, key, pattern)
        try:
            compiled = re.compile(pattern)
        except re.error as exc:
            raise fields.TaskConfigError(file, key, f"is not a valid regular expression ({exc})") from None
        if compiled.search(""):
            raise fields.TaskConfigError(file, key, "matches the empty string, which would redact nothing "
                                                    "useful: make it match at least one character")
        rules.append(Rule(name, compiled))
    replacement = fields.string(file, "privacy.replacement", raw.get("replacement", "[{rule}]"))
    return Privacy(tuple(rules), replacement)
