"""Test double of webui v1.10.1 `modules/styles.py`, reduced: a `StyleDatabase` that applies named prompt styles.

No style files are read or written; a test may put `PromptStyle`s into `shared.prompt_styles.styles`. A style's
text replaces `{prompt}` with the prompt when it has that placeholder, else it is appended after a comma.
"""

from __future__ import annotations

from typing import NamedTuple


class PromptStyle(NamedTuple):
    name: str
    prompt: str | None
    negative_prompt: str | None
    path: str | None = None


def merge_prompts(style_prompt: str, prompt: str) -> str:
    if "{prompt}" in style_prompt:
        return style_prompt.replace("{prompt}", prompt)
    return ", ".join(part for part in (prompt.strip(), style_prompt.strip()) if part)


def apply_styles_to_prompt(prompt, styles):
    for text in styles:
        prompt = merge_prompts(text, prompt)
    return prompt


class StyleDatabase:
    def __init__(self, paths=()):
        self.paths = list(paths)
        self.styles: dict[str, PromptStyle] = {}
        self.no_style = PromptStyle("None", "", "", None)

    def reload(self):
        """Style files are not part of the double."""

    def _texts(self, names, negative: bool) -> list[str]:
        found = (self.styles.get(name, self.no_style) for name in names)
        return [(s.negative_prompt if negative else s.prompt) or "" for s in found]

    def get_style_prompts(self, styles):
        return self._texts(styles, negative=False)

    def get_negative_style_prompts(self, styles):
        return self._texts(styles, negative=True)

    def apply_styles_to_prompt(self, prompt, styles):
        return apply_styles_to_prompt(prompt, self._texts(styles, negative=False))

    def apply_negative_styles_to_prompt(self, prompt, styles):
        return apply_styles_to_prompt(prompt, self._texts(styles, negative=True))
