"""Mirror of modules/prompt_parser.py: prompt editing schedules, AND composition, cond reconstruction, emphasis.

The real module parses schedules with a lark grammar; this one uses a small recursive parser for the same syntax:
`[to:when]`, `[from::when]`, `[from:to:when]` (integer `when` = step, with a "." = fraction of the steps, v1.10.1's
"new" timelines; `use_old_scheduling` gives the old rule), alternation `[a|b]`, and emphasis brackets kept as text.
A prompt it cannot parse (an unclosed bracket) is used unscheduled, as the real one does on a lark error."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import NamedTuple

import torch


class SdConditioning(list):
    """A list with prompts for stable diffusion's conditioner model; also carries width/height (SDXL needs them)."""

    def __init__(self, prompts, is_negative_prompt=False, width=None, height=None, copy_from=None):
        super().__init__()
        self.extend(prompts)

        if copy_from is None:
            copy_from = prompts

        self.is_negative_prompt = is_negative_prompt or getattr(copy_from, "is_negative_prompt", False)
        self.width = width or getattr(copy_from, "width", None)
        self.height = height or getattr(copy_from, "height", None)


# ---------------------------------------------------------------------------------------------------------------------
# schedules


@dataclass
class _Scheduled:
    before: list | None
    after: list
    when: str
    step: int = 0


@dataclass
class _Alternate:
    options: list


class _ParseError(Exception):
    pass


_re_number = re.compile(r"\s*([+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)\s*")


class _ScheduleParser:
    def __init__(self, text: str) -> None:
        self.text = text

    def parse(self) -> list:
        nodes, i = self.sequence(0, frozenset())
        assert i == len(self.text)
        return nodes

    def sequence(self, i: int, stops: frozenset) -> tuple[list, int]:
        nodes: list = []
        plain = ""
        text = self.text
        while i < len(text):
            ch = text[i]
            if ch in stops:
                break
            if ch == "\\" and i + 1 < len(text):
                plain += text[i : i + 2]
                i += 2
                continue
            if ch in "([":
                if plain:
                    nodes.append(plain)
                    plain = ""
                inner, i = self.parens(i + 1) if ch == "(" else self.brackets(i + 1)
                nodes.extend(inner)
                continue
            plain += ch
            i += 1
        if plain:
            nodes.append(plain)
        return nodes, i

    def parens(self, i: int) -> tuple[list, int]:
        inner, i = self.sequence(i, frozenset(")"))
        if i >= len(self.text):
            raise _ParseError
        return ["(", *inner, ")"], i + 1

    def brackets(self, i: int) -> tuple[list, int]:
        parts, seps = [], []
        while True:
            nodes, i = self.sequence(i, frozenset(":|]"))
            parts.append(nodes)
            if i >= len(self.text):
                raise _ParseError
            ch = self.text[i]
            i += 1
            if ch == "]":
                break
            seps.append(ch)

        if seps and all(s == "|" for s in seps):
            return [_Alternate(parts)], i
        last = parts[-1]
        when = _re_number.fullmatch(last[0]) if len(last) == 1 and isinstance(last[0], str) else None
        if seps and all(s == ":" for s in seps) and len(seps) <= 2 and when is not None:
            before = parts[0] if len(seps) == 2 else None
            return [_Scheduled(before, parts[-2], when.group(1))], i

        literal: list = ["["]
        for k, part in enumerate(parts):
            literal.extend(part)
            if k < len(seps):
                literal.append(seps[k])
        return [*literal, "]"], i


def _walk(nodes: list):
    for node in nodes:
        if isinstance(node, _Scheduled):
            yield node
            yield from _walk(node.before or [])
            yield from _walk(node.after)
        elif isinstance(node, _Alternate):
            yield node
            for option in node.options:
                yield from _walk(option)


def _render(nodes: list, step: int) -> str:
    out = []
    for node in nodes:
        if isinstance(node, str):
            out.append(node)
        elif isinstance(node, _Scheduled):
            out.append(_render(node.before or [], step) if step <= node.step else _render(node.after, step))
        else:
            out.append(_render(node.options[(step - 1) % len(node.options)], step))
    return "".join(out)


def get_learned_conditioning_prompt_schedules(prompts, base_steps, hires_steps=None, use_old_scheduling=False):
    """
    >>> g = lambda p: get_learned_conditioning_prompt_schedules([p], 10)[0]
    >>> g("a [b:3]")
    [[3, 'a '], [10, 'a b']]
    >>> g("a [b:c:0.5] d")
    [[5, 'a b d'], [10, 'a c d']]
    """
    if hires_steps is None or use_old_scheduling:
        int_offset = 0
        flt_offset = 0
        steps = base_steps
    else:
        int_offset = base_steps
        flt_offset = 1.0
        steps = hires_steps

    def get_schedule(prompt):
        try:
            tree = _ScheduleParser(prompt).parse()
        except _ParseError:
            return [[steps, prompt]]

        res = {steps}
        for node in _walk(tree):
            if isinstance(node, _Alternate):
                res.update(range(1, steps + 1))
                continue
            v = float(node.when)
            if use_old_scheduling:
                v = v * steps if v < 1 else v
            elif "." in node.when:
                v = (v - flt_offset) * steps
            else:
                v = v - int_offset
            node.step = min(steps, int(v))
            if node.step >= 1:
                res.add(node.step)

        return [[t, _render(tree, t)] for t in sorted(res)]

    promptdict = {prompt: get_schedule(prompt) for prompt in set(prompts)}
    return [promptdict[prompt] for prompt in prompts]


class ScheduledPromptConditioning(NamedTuple):
    end_at_step: int
    cond: object


def get_learned_conditioning(
    model, prompts: SdConditioning | list[str], steps, hires_steps=None, use_old_scheduling=False
):
    """converts a list of prompts into a list of prompt schedules - each schedule is a list of
    ScheduledPromptConditioning, specifying the condition (cond), and the sampling step at which this condition is
    to be replaced by the next one. Every distinct prompt is encoded once, all its schedule texts in one call."""
    res = []

    prompt_schedules = get_learned_conditioning_prompt_schedules(prompts, steps, hires_steps, use_old_scheduling)
    cache = {}

    for prompt, prompt_schedule in zip(prompts, prompt_schedules, strict=True):
        cached = cache.get(prompt)
        if cached is not None:
            res.append(cached)
            continue

        texts = SdConditioning([x[1] for x in prompt_schedule], copy_from=prompts)
        conds = model.get_learned_conditioning(texts)

        cond_schedule = []
        for i, (end_at_step, _) in enumerate(prompt_schedule):
            cond = {k: v[i] for k, v in conds.items()} if isinstance(conds, dict) else conds[i]
            cond_schedule.append(ScheduledPromptConditioning(end_at_step, cond))

        cache[prompt] = cond_schedule
        res.append(cond_schedule)

    return res


re_AND = re.compile(r"\bAND\b")
re_weight = re.compile(r"^((?:\s|.)*?)(?:\s*:\s*([-+]?(?:\d+\.?|\d*\.\d+)))?\s*$")


def get_multicond_prompt_list(prompts: SdConditioning | list[str]):
    res_indexes = []

    prompt_indexes = {}
    prompt_flat_list = SdConditioning(prompts)
    prompt_flat_list.clear()

    for prompt in prompts:
        subprompts = re_AND.split(prompt)

        indexes = []
        for subprompt in subprompts:
            match = re_weight.search(subprompt)

            text, weight = match.groups() if match is not None else (subprompt, 1.0)

            weight = float(weight) if weight is not None else 1.0

            index = prompt_indexes.get(text)
            if index is None:
                index = len(prompt_flat_list)
                prompt_flat_list.append(text)
                prompt_indexes[text] = index

            indexes.append((index, weight))

        res_indexes.append(indexes)

    return res_indexes, prompt_flat_list, prompt_indexes


class ComposableScheduledPromptConditioning:
    def __init__(self, schedules, weight=1.0):
        self.schedules: list[ScheduledPromptConditioning] = schedules
        self.weight: float = weight


class MulticondLearnedConditioning:
    def __init__(self, shape, batch):
        self.shape: tuple = shape  # the shape field is needed to send this object to DDIM/PLMS
        self.batch: list[list[ComposableScheduledPromptConditioning]] = batch


def get_multicond_learned_conditioning(
    model, prompts, steps, hires_steps=None, use_old_scheduling=False
) -> MulticondLearnedConditioning:
    """same as get_learned_conditioning, but returns a list of ScheduledPromptConditioning along with the weight
    objects for each prompt. For each prompt, the list is obtained by splitting the prompt using the AND separator."""
    res_indexes, prompt_flat_list, prompt_indexes = get_multicond_prompt_list(prompts)

    learned_conditioning = get_learned_conditioning(model, prompt_flat_list, steps, hires_steps, use_old_scheduling)

    res = []
    for indexes in res_indexes:
        res.append([ComposableScheduledPromptConditioning(learned_conditioning[i], weight) for i, weight in indexes])

    return MulticondLearnedConditioning(shape=(len(prompts),), batch=res)


class DictWithShape(dict):
    def __init__(self, x, shape=None):
        super().__init__()
        self.update(x)

    @property
    def shape(self):
        return self["crossattn"].shape


def _schedule_index(schedules, current_step):
    for current, entry in enumerate(schedules):
        if current_step <= entry.end_at_step:
            return current
    return 0


def reconstruct_cond_batch(c: list[list[ScheduledPromptConditioning]], current_step):
    param = c[0][0].cond
    is_dict = isinstance(param, dict)

    if is_dict:
        dict_cond = param
        res = {k: torch.zeros((len(c),) + v.shape, device=v.device, dtype=v.dtype) for k, v in dict_cond.items()}
        res = DictWithShape(res, (len(c),) + dict_cond["crossattn"].shape)
    else:
        res = torch.zeros((len(c),) + param.shape, device=param.device, dtype=param.dtype)

    for i, cond_schedule in enumerate(c):
        target_index = _schedule_index(cond_schedule, current_step)
        if is_dict:
            for k, v in cond_schedule[target_index].cond.items():
                res[k][i] = v
        else:
            res[i] = cond_schedule[target_index].cond

    return res


def stack_conds(tensors):
    """prompts of very different lengths give conds of different token counts: repeat the last vector to match"""
    token_count = max([x.shape[0] for x in tensors])
    for i in range(len(tensors)):
        if tensors[i].shape[0] != token_count:
            last_vector = tensors[i][-1:]
            last_vector_repeated = last_vector.repeat([token_count - tensors[i].shape[0], 1])
            tensors[i] = torch.vstack([tensors[i], last_vector_repeated])

    return torch.stack(tensors)


def reconstruct_multicond_batch(c: MulticondLearnedConditioning, current_step):
    param = c.batch[0][0].schedules[0].cond

    tensors = []
    conds_list = []

    for composable_prompts in c.batch:
        conds_for_batch = []

        for composable_prompt in composable_prompts:
            target_index = _schedule_index(composable_prompt.schedules, current_step)
            conds_for_batch.append((len(tensors), composable_prompt.weight))
            tensors.append(composable_prompt.schedules[target_index].cond)

        conds_list.append(conds_for_batch)

    if isinstance(tensors[0], dict):
        keys = list(tensors[0].keys())
        stacked = {k: stack_conds([x[k] for x in tensors]) for k in keys}
        stacked = DictWithShape(stacked, stacked["crossattn"].shape)
    else:
        stacked = stack_conds(tensors).to(device=param.device, dtype=param.dtype)

    return conds_list, stacked


# ---------------------------------------------------------------------------------------------------------------------
# emphasis

re_attention = re.compile(
    r"""
    \\[()\[\]\\]        # escaped bracket or backslash
    |\\                 # lone backslash
    |\(|\[              # openers
    |:\s*([+-]?[.\d]+)\s*\)  # ":weight)" closes a round bracket with a weight
    |\)|]               # closers
    |[^\\()\[\]:]+      # text
    |:                  # a colon that is not a weight
    """,
    re.X,
)

re_break = re.compile(r"\s*\bBREAK\b\s*", re.S)


def parse_prompt_attention(text):
    """
    Parses a string with attention tokens and returns a list of pairs: text and its associated weight.
      (abc) ×1.1, (abc:3.12) ×3.12, [abc] ÷1.1, \\( \\) \\[ \\] \\\\ literal characters, BREAK → ["BREAK", -1]

    >>> parse_prompt_attention('an (important) word')
    [['an ', 1.0], ['important', 1.1], [' word', 1.0]]
    """
    res = []
    round_brackets = []
    square_brackets = []

    round_bracket_multiplier = 1.1
    square_bracket_multiplier = 1 / 1.1

    def multiply_range(start_position, multiplier):
        for p in range(start_position, len(res)):
            res[p][1] *= multiplier

    for m in re_attention.finditer(text):
        token = m.group(0)
        weight = m.group(1)

        if token.startswith("\\"):
            res.append([token[1:], 1.0])
        elif token == "(":
            round_brackets.append(len(res))
        elif token == "[":
            square_brackets.append(len(res))
        elif weight is not None and round_brackets:
            multiply_range(round_brackets.pop(), float(weight))
        elif token == ")" and round_brackets:
            multiply_range(round_brackets.pop(), round_bracket_multiplier)
        elif token == "]" and square_brackets:
            multiply_range(square_brackets.pop(), square_bracket_multiplier)
        else:
            parts = re.split(re_break, token)
            for i, part in enumerate(parts):
                if i > 0:
                    res.append(["BREAK", -1])
                res.append([part, 1.0])

    for pos in round_brackets:
        multiply_range(pos, round_bracket_multiplier)

    for pos in square_brackets:
        multiply_range(pos, square_bracket_multiplier)

    if len(res) == 0:
        res = [["", 1.0]]

    # merge runs of identical weights
    i = 0
    while i + 1 < len(res):
        if res[i][1] == res[i + 1][1]:
            res[i][0] += res[i + 1][0]
            res.pop(i + 1)
        else:
            i += 1

    return res
