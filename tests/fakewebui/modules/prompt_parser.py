"""Stand-in for webui v1.10.1 `modules/prompt_parser.py`: prompt schedules, AND, cond batches, emphasis weights.

Schedules: `[to:when]`, `[from::when]`, `[from:to:when]` and alternation `[a|b]`, nested at will. `when` with a "."
is a fraction of the steps, without one a step number; in a hires pass (hires_steps given) fractions count from 1.0
and steps from the first pass's count, unless `use_old_scheduling` (then `when` < 1 is a fraction of the steps of
the pass). The webui parses with a lark grammar; here a small recursive reader accepts the same syntax, with lark's
recovery of stray top-level brackets and colons as plain text. A prompt it cannot read (say, a `|` outside a
bracket) is used unscheduled, as the webui does on a lark error. Compared with lark on random prompts, the only
differences left are lark's own failures on a few prompts with stray characters (e.g. `x[:2]:(`), scheduled here.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import torch


class SdConditioning(list):
    """Prompts for the conditioner, with the image size (SDXL embeds it) and whether they are negative prompts;
    unset values come from `copy_from` (default: `prompts` itself)."""

    def __init__(self, prompts, is_negative_prompt=False, width=None, height=None, copy_from=None):
        super().__init__(prompts)
        source = prompts if copy_from is None else copy_from
        self.is_negative_prompt = is_negative_prompt or getattr(source, "is_negative_prompt", False)
        self.width = width or getattr(source, "width", None)
        self.height = height or getattr(source, "height", None)


# ---------------------------------------------------------------------------------------------------------------------
# schedules


class _Unreadable(ValueError):
    """The prompt is not in the schedule syntax; it is used as it is."""


@dataclass
class _Edit:
    """`[before:after:when]`; `step` is filled in once the number of steps is known."""

    before: list
    after: list
    when: str
    step: int = 0


@dataclass
class _Cycle:
    """`[a|b|…]`: option (step - 1) mod n at each step."""

    options: list = field(default_factory=list)


_WHEN = re.compile(r"\s*([+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?)\s*")
_PLAIN_RUN = re.compile(r"[^\\()\[\]:|]+")


class _Reader:
    """Recursive descent over one prompt; nodes are str, `_Edit` or `_Cycle`."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0
        # a group read from a position reads the same wherever it is nested, so each is read once: the top
        # level's retries after a stray opener stay linear. (node, end) or None for an unreadable group
        self.groups: dict[int, tuple[Any, int] | None] = {}

    def read(self) -> list:
        return self.sequence(stops="")

    def sequence(self, stops: str) -> list:
        """Nodes up to (not past) the first character in `stops`; `stops` is "" only at the top level, where
        stray closers and colons are plain text."""
        nodes: list = []
        text = self.text
        while self.pos < len(text):
            ch = text[self.pos]
            run = _PLAIN_RUN.match(text, self.pos)
            if run:
                nodes.append(run.group())
                self.pos = run.end()
            elif ch in stops:
                break
            elif ch == "\\":
                if text[self.pos + 1 : self.pos + 2] in ("", "\n"):
                    raise _Unreadable(f"backslash escapes nothing at {self.pos}")
                nodes.append(text[self.pos : self.pos + 2])  # escapes stay for parse_prompt_attention
                self.pos += 2
            elif ch in "([":
                nodes.append(self.group_or_stray() if not stops else self.group())
            elif ch in ":)]" and not stops:
                nodes.append(ch)
                self.pos += 1
            else:
                raise _Unreadable(f"{ch!r} at {self.pos}")
        return nodes

    def group(self) -> Any:
        start = self.pos
        if start not in self.groups:
            try:
                node = self.bracket() if self.text[start] == "[" else self.parens()
                self.groups[start] = (node, self.pos)
            except (_Unreadable, RecursionError):  # too deep a nesting is unreadable too
                self.groups[start] = None
        known = self.groups[start]
        if known is None:
            raise _Unreadable(f"no group at {start}")
        node, self.pos = known
        return node

    def parens(self) -> list:
        self.pos += 1
        inner = ["(", *self.sequence(":)")]
        if self.text.startswith(":", self.pos):  # `(text:weight)`: one colon, more make it unreadable
            self.pos += 1
            inner += [":", *self.sequence(":)")]
        self.expect(")")
        return [*inner, ")"]

    def group_or_stray(self) -> Any:
        """At the top level an opener that starts no readable group is plain text (lark's `start` rule)."""
        start = self.pos
        try:
            return self.group()
        except _Unreadable:
            self.pos = start + 1
            return self.text[start]

    def expect(self, closer: str) -> None:
        if not self.text.startswith(closer, self.pos):
            raise _Unreadable(f"{closer!r} missing at {self.pos}")
        self.pos += 1

    def bracket(self) -> Any:
        self.pos += 1
        parts, separators = [self.sequence(":|]")], ""
        while self.pos < len(self.text) and self.text[self.pos] in ":|":
            separators += self.text[self.pos]
            self.pos += 1
            parts.append(self.sequence(":|]"))
        self.expect("]")
        if "|" in separators:
            if ":" in separators:
                raise _Unreadable("'|' and ':' in one bracket")
            return _Cycle(parts)
        last = parts[-1]
        when = _WHEN.fullmatch(last[0]) if len(last) == 1 and isinstance(last[0], str) else None
        if when and len(separators) in (1, 2):
            return _Edit(before=parts[0] if len(separators) == 2 else [], after=parts[-2], when=when.group(1))
        literal: list = ["["]  # `[emphasis]`, or colons around something that is not a number
        for part, sep in itertools.zip_longest(parts, separators, fillvalue=""):
            literal += [*part, sep]
        return [*literal, "]"]


def _nodes_below(nodes: list):
    for node in nodes:
        if isinstance(node, list):
            yield from _nodes_below(node)
        elif isinstance(node, _Edit):
            yield node
            yield from _nodes_below(node.before + node.after)
        elif isinstance(node, _Cycle):
            yield node
            yield from _nodes_below(node.options)


def _text_at(nodes: list, step: int) -> str:
    out = []
    for node in nodes:
        if isinstance(node, str):
            out.append(node)
        elif isinstance(node, list):
            out.append(_text_at(node, step))
        elif isinstance(node, _Edit):
            out.append(_text_at(node.before if step <= node.step else node.after, step))
        else:
            out.append(_text_at(node.options[(step - 1) % len(node.options)], step))
    return "".join(out)


def get_learned_conditioning_prompt_schedules(prompts, base_steps, hires_steps=None, use_old_scheduling=False):
    """For each prompt, `[[end_at_step, text], …]`: the text to use up to and including each step.

    >>> get_learned_conditioning_prompt_schedules(["a [b:c:0.5] d"], 10)[0]
    [[5, 'a b d'], [10, 'a c d']]
    """
    hires = hires_steps is not None and not use_old_scheduling
    steps = hires_steps if hires else base_steps
    step_origin, fraction_origin = (base_steps, 1.0) if hires else (0, 0.0)

    def edit_step(when: str) -> int:
        value = float(when)
        if use_old_scheduling:
            value = value * steps if value < 1 else value
        elif "." in when:
            value = (value - fraction_origin) * steps
        else:
            value -= step_origin
        return min(steps, int(value))

    def schedule(prompt: str) -> list:
        try:
            tree = _Reader(prompt).read()
        except (_Unreadable, RecursionError):
            return [[steps, prompt]]
        ends = {steps}
        for node in _nodes_below(tree):
            if isinstance(node, _Cycle):
                ends.update(range(1, steps + 1))
                continue
            node.step = edit_step(node.when)
            if node.step >= 1:
                ends.add(node.step)
        return [[end, _text_at(tree, end)] for end in sorted(ends)]

    known = {prompt: schedule(prompt) for prompt in dict.fromkeys(prompts)}
    return [known[prompt] for prompt in prompts]


class ScheduledPromptConditioning(NamedTuple):
    end_at_step: int
    cond: Any  # a tensor (tokens, width), or SDXL's dict of them


def get_learned_conditioning(
    model, prompts: SdConditioning | list[str], steps, hires_steps=None, use_old_scheduling=False
):
    """One schedule of `ScheduledPromptConditioning` per prompt. Each distinct prompt costs one
    `model.get_learned_conditioning` call with all its schedule's texts."""
    schedules = get_learned_conditioning_prompt_schedules(prompts, steps, hires_steps, use_old_scheduling)
    encoded: dict[str, list[ScheduledPromptConditioning]] = {}
    for prompt, schedule in zip(prompts, schedules, strict=True):
        if prompt in encoded:
            continue
        conds = model.get_learned_conditioning(SdConditioning([text for _, text in schedule], copy_from=prompts))
        encoded[prompt] = [
            ScheduledPromptConditioning(end, _row(conds, index)) for index, (end, _) in enumerate(schedule)
        ]
    return [encoded[prompt] for prompt in prompts]


def _row(conds: Any, index: int) -> Any:
    return {key: value[index] for key, value in conds.items()} if isinstance(conds, dict) else conds[index]


# ---------------------------------------------------------------------------------------------------------------------
# AND

re_AND = re.compile(r"\bAND\b")
_SUBPROMPT_WEIGHT = re.compile(r":\s*([-+]?(?:\d+\.?|\d*\.\d+))$")


def _split_weight(subprompt: str) -> tuple[str, float]:
    """ "a cat :1.5 " → ("a cat", 1.5); without a trailing weight the weight is 1."""
    text = subprompt.rstrip()
    weight = _SUBPROMPT_WEIGHT.search(text)
    if weight is None:
        return text, 1.0
    return text[: weight.start()].rstrip(), float(weight.group(1))


def get_multicond_prompt_list(prompts: SdConditioning | list[str]):
    """Per prompt its `(index, weight)` pairs, the flat list of distinct sub-prompts (an `SdConditioning` like
    `prompts`), and the sub-prompt → index map."""
    flat = SdConditioning([], copy_from=prompts)
    index_of: dict[str, int] = {}
    per_prompt = []
    for prompt in prompts:
        pairs = []
        for text, weight in map(_split_weight, re_AND.split(prompt)):
            if text not in index_of:
                index_of[text] = len(flat)
                flat.append(text)
            pairs.append((index_of[text], weight))
        per_prompt.append(pairs)
    return per_prompt, flat, index_of


class ComposableScheduledPromptConditioning:
    def __init__(self, schedules, weight=1.0):
        self.schedules: list[ScheduledPromptConditioning] = schedules
        self.weight: float = weight


class MulticondLearnedConditioning:
    def __init__(self, shape, batch):
        self.shape: tuple = shape  # (number of prompts,)
        self.batch: list[list[ComposableScheduledPromptConditioning]] = batch


def get_multicond_learned_conditioning(
    model, prompts, steps, hires_steps=None, use_old_scheduling=False
) -> MulticondLearnedConditioning:
    """Like `get_learned_conditioning`, for prompts made of weighted `AND` parts (each distinct part encoded once)."""
    per_prompt, flat, _ = get_multicond_prompt_list(prompts)
    schedules = get_learned_conditioning(model, flat, steps, hires_steps, use_old_scheduling)
    batch = [
        [ComposableScheduledPromptConditioning(schedules[i], weight) for i, weight in pairs] for pairs in per_prompt
    ]
    return MulticondLearnedConditioning(shape=(len(prompts),), batch=batch)


# ---------------------------------------------------------------------------------------------------------------------
# batches of conds at a step


class DictWithShape(dict):
    """SDXL's cond dict, with the `shape` of its "crossattn" entry."""

    def __init__(self, x, shape=None):
        super().__init__(x)

    @property
    def shape(self):
        return self["crossattn"].shape


def _cond_at(schedule: list[ScheduledPromptConditioning], current_step: int) -> Any:
    """The cond whose range holds `current_step` (the first one past the end)."""
    return next((entry.cond for entry in schedule if current_step <= entry.end_at_step), schedule[0].cond)


def _stack(rows: list, stack) -> Any:
    if isinstance(rows[0], dict):
        return DictWithShape({key: stack([row[key] for row in rows]) for key in rows[0]})
    return stack(rows)


def reconstruct_cond_batch(c: list[list[ScheduledPromptConditioning]], current_step):
    """The (B, tokens, width) batch (or dict of batches) of each prompt's cond at `current_step`; rows must have
    equal token counts, as in the webui."""
    return _stack([_cond_at(schedule, current_step) for schedule in c], torch.stack)


def stack_conds(tensors):
    """Stack conds of different token counts by repeating each shorter one's last vector."""
    longest = max(t.shape[0] for t in tensors)
    padded = [torch.cat([t, t[-1:].expand(longest - t.shape[0], *t.shape[1:])]) for t in tensors]
    return torch.stack(padded)


def reconstruct_multicond_batch(c: MulticondLearnedConditioning, current_step):
    """`(conds_list, tensor)`: per prompt its `(row, weight)` pairs, and every sub-prompt's cond as one batch."""
    rows: list = []
    conds_list = []
    for parts in c.batch:
        conds_list.append([(len(rows) + k, part.weight) for k, part in enumerate(parts)])
        rows += [_cond_at(part.schedules, current_step) for part in parts]
    return conds_list, _stack(rows, stack_conds)


# ---------------------------------------------------------------------------------------------------------------------
# emphasis

_ATTENTION_TOKEN = re.compile(
    r"""
      (?P<escape>\\[\\()\[\]]?)           # backslash and the character it makes literal
    | (?P<open>[(\[])
    | (?P<weighted>:\s*(?P<weight>[+-]?[.\d]+)\s*\))
    | (?P<close>[)\]])
    | (?P<text>[^\\()\[\]:]+|:)
    """,
    re.X,
)
_BREAK = re.compile(r"\s*\bBREAK\b\s*", re.S)
_BRACKET_FACTOR = {"(": 1.1, "[": 1 / 1.1}


def parse_prompt_attention(text):
    """Split a prompt into `[text, weight]` pieces: `(x)` ×1.1, `[x]` ÷1.1, `(x:w)` ×w, brackets multiply when
    they close (unclosed ones at the end), backslash escapes make brackets literal, `BREAK` becomes
    `["BREAK", -1]`, and neighbours of equal weight are joined.

    >>> parse_prompt_attention("an (important) word")
    [['an ', 1.0], ['important', 1.1], [' word', 1.0]]
    """
    pieces: list[list] = []
    opened: dict[str, list[int]] = {"(": [], "[": []}  # per kind, where each open bracket's pieces start

    def scale_from(start: int, factor: float) -> None:
        for piece in pieces[start:]:
            piece[1] *= factor

    def close(bracket: str, weight: str | None) -> bool:
        """Close the innermost open `bracket`; False when none is open."""
        if not opened[bracket]:
            return False
        scale_from(opened[bracket].pop(), _BRACKET_FACTOR[bracket] if weight is None else float(weight))
        return True

    for token in _ATTENTION_TOKEN.finditer(text):
        kind, value = token.lastgroup, token.group()
        if kind == "escape":
            pieces.append([value[1:], 1.0])
        elif kind == "open":
            opened[value].append(len(pieces))
        elif kind == "weighted" and close("(", token.group("weight")):
            pass
        elif kind == "close" and close("(" if value == ")" else "[", None):
            pass
        else:
            for n, part in enumerate(_BREAK.split(value)):
                pieces += [["BREAK", -1], [part, 1.0]] if n else [[part, 1.0]]

    for bracket, starts in opened.items():  # unclosed: round ones first, then square ones, as the webui does
        for start in starts:
            scale_from(start, _BRACKET_FACTOR[bracket])

    if not pieces:
        return [["", 1.0]]
    return [["".join(t for t, _ in run), weight] for weight, run in itertools.groupby(pieces, key=lambda p: p[1])]
