"""A set of PyTorch hooks with one lifetime.

Every hook the extension puts on the model goes through a `HookSet`: it keeps each `RemovableHandle`, removes them
in reverse order of registration, and removing twice is harmless. Used as a context manager, nothing outlives the
`with` block, whether it ends normally, by an exception, or by an interrupt. `HookSet.close_all()` removes the
hooks of every set still open in this process — the webui glue calls it before each job and on script reload, so a
run that died before its cleanup cannot leave hooks behind.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

from torch import nn
from torch.utils.hooks import RemovableHandle

__all__ = ["HookSet"]

_open_sets: weakref.WeakSet[HookSet] = weakref.WeakSet()


class HookSet(AbstractContextManager):
    """Hooks registered together and removed together (last in, first out)."""

    def __init__(self) -> None:
        self._handles: list[RemovableHandle] = []
        _open_sets.add(self)

    def __len__(self) -> int:
        return len(self._handles)

    def __exit__(self, *exc: object) -> None:
        self.close()

    def add(self, handle: RemovableHandle) -> RemovableHandle:
        self._handles.append(handle)
        return handle

    def forward(self, module: nn.Module, fn: Callable[..., Any], *, with_kwargs: bool = False) -> RemovableHandle:
        """`fn(module, args, output)` (or `fn(module, args, kwargs, output)`) after `module` runs."""
        return self.add(module.register_forward_hook(fn, with_kwargs=with_kwargs))

    def pre(self, module: nn.Module, fn: Callable[..., Any], *, with_kwargs: bool = False) -> RemovableHandle:
        """`fn(module, args)` (or `fn(module, args, kwargs)`) before `module` runs; may return new inputs."""
        return self.add(module.register_forward_pre_hook(fn, with_kwargs=with_kwargs))

    def close(self) -> None:
        """Remove every hook, newest first. Safe to call more than once."""
        while self._handles:
            self._handles.pop().remove()
        _open_sets.discard(self)

    @staticmethod
    def close_all() -> int:
        """Close every hook set still open in this process; returns how many were open."""
        stale = list(_open_sets)
        for hooks in stale:
            hooks.close()
        return len(stale)
