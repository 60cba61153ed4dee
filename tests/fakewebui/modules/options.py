"""Test double of webui v1.10.1 `modules/options.py`: `OptionInfo` (one setting's declaration) and `Options`.

`Options.data` maps each key to its current value; `opts.<key>` reads it (falling back to the declared default)
and `opts.<key> = value` writes it. `set` is the settings page's path: it runs the setting's `onchange` and reports
whether anything changed; a failing `onchange` is reported and the old value comes back. Saving to and loading from
`config.json` are not modelled.
"""

from __future__ import annotations

import json
from typing import Any

from modules import errors
from modules.shared_cmd_options import cmd_opts


class OptionInfo:
    def __init__(
        self,
        default=None,
        label="",
        component=None,
        component_args=None,
        onchange=None,
        section=None,
        refresh=None,
        comment_before="",
        comment_after="",
        infotext=None,
        restrict_api=False,
        category_id=None,
    ):
        self.default, self.label, self.component, self.component_args = default, label, component, component_args
        self.onchange, self.section, self.refresh, self.category_id = onchange, section, refresh, category_id
        self.comment_before, self.comment_after = comment_before, comment_after
        self.infotext, self.restrict_api, self.do_not_save = infotext, restrict_api, False

    # Decorations for the settings page (the double keeps them as plain text); each returns the option.
    def link(self, label, url):
        return self._before(f"{label} <{url}>")

    def js(self, label, js_func):
        return self._before(f"{label} [{js_func}]")

    def info(self, info):
        return self._after(f"({info})")

    def html(self, html):
        return self._after(html)

    def _before(self, text):
        self.comment_before = f"{self.comment_before} {text}".strip()
        return self

    def _after(self, text):
        self.comment_after = f"{self.comment_after} {text}".strip()
        return self

    def needs_restart(self):
        return self.info("requires restart")

    def needs_reload_ui(self):
        return self.info("requires Reload UI")


class OptionHTML(OptionInfo):
    """Text shown on the settings page; not a setting (never stored)."""

    def __init__(self, text):
        super().__init__(str(text).strip(), component=lambda **kwargs: None)
        self.do_not_save = True


def options_section(section_identifier, options_dict):
    """Mark every option of the dict as belonging to a (id, title) section, with a category as optional third item."""
    section, category = tuple(section_identifier[:2]), (section_identifier[2:] or (None,))[0]
    for info in options_dict.values():
        info.section = section
        if category is not None:
            info.category_id = category
    return options_dict


_OWN = frozenset({"data", "data_labels", "restricted_opts", "typemap"})


class Options:
    typemap = {int: float}

    def __init__(self, data_labels: dict[str, OptionInfo], restricted_opts):
        object.__setattr__(self, "data_labels", data_labels)
        object.__setattr__(self, "restricted_opts", restricted_opts)
        object.__setattr__(self, "data", {k: v.default for k, v in data_labels.items() if not v.do_not_save})

    def __getattr__(self, item: str) -> Any:
        if item in _OWN:
            raise AttributeError(item)
        if item in self.data:
            return self.data[item]
        info = self.data_labels.get(item)
        if info is not None:
            return info.default
        raise AttributeError(f"no setting named {item!r}")

    def __setattr__(self, key: str, value: Any) -> None:
        if key in _OWN or (key not in self.data and key not in self.data_labels):
            object.__setattr__(self, key, value)
            return
        if cmd_opts.freeze_settings:
            raise RuntimeError("changing settings is disabled (--freeze-settings)")
        info = self.data_labels.get(key)
        if info is not None and info.do_not_save:
            return
        if info is not None and isinstance(info.component_args, dict) and info.component_args.get("visible") is False:
            raise RuntimeError(f"the setting {key!r} is restricted and cannot be changed here")
        self.data[key] = value

    def set(self, key, value, is_api=False, run_callbacks=True):
        """Change a setting as the settings page does; True when the value changed."""
        before = self.data.get(key)
        info = self.data_labels[key]
        if before == value or info.do_not_save or (is_api and info.restrict_api):
            return False
        try:
            self.__setattr__(key, value)
        except RuntimeError:
            return False
        if run_callbacks and info.onchange is not None:
            try:
                info.onchange()
            except Exception as e:
                errors.display(e, f"running onchange of setting {key} (value {value!r})")
                self.data[key] = before
                return False
        return True

    def get_default(self, key):
        info = self.data_labels.get(key)
        return None if info is None else info.default

    def add_option(self, key, info):
        self.data_labels.update({key: info})
        if not info.do_not_save:
            self.data.setdefault(key, info.default)

    def onchange(self, key, func, call=True):
        self.data_labels[key].onchange = func
        if call:
            func()

    def same_type(self, x, y):
        return x is None or y is None or self.typemap.get(type(x), type(x)) == self.typemap.get(type(y), type(y))

    def dumpjson(self):
        return json.dumps({k: self.data.get(k, info.default) for k, info in self.data_labels.items()})
