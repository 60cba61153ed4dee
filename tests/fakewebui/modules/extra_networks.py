"""Stand-in for webui v1.10.1 `modules/extra_networks.py`: `<name:arg:arg…>` tags in prompts.

`parse_prompts` removes the tags (the text encoder never sees them) and returns what the first prompt asked for;
`activate` hands each registered network its arguments (every other registered network gets an empty list), then
fires the scripts' `after_extra_networks_activate`; `deactivate` undoes them. The fake registers no network, so tags
are parsed, logged as unknown and dropped, as the webui does with a name it does not know.
"""

from __future__ import annotations

import logging
import re
from collections import defaultdict
from typing import Any

from modules import errors

logger = logging.getLogger(__name__)

extra_network_registry: dict[str, ExtraNetwork] = {}
extra_network_aliases: dict[str, ExtraNetwork] = {}

_TAG = re.compile(r"<(\w+):([^>]+)>")


class ExtraNetworkParams:
    """The `:`-separated arguments of one tag: `key=value` ones in `named`, the others in `positional`."""

    def __init__(self, items=None):
        self.items = items or []
        self.positional: list[Any] = []
        self.named: dict[str, str] = {}
        for item in self.items:
            key_value = item.split("=", 2) if isinstance(item, str) else [item]
            if len(key_value) == 2:
                self.named[key_value[0]] = key_value[1]
            else:
                self.positional.append(item)

    def __eq__(self, other):
        return isinstance(other, ExtraNetworkParams) and self.items == other.items

    __hash__ = None  # mutable, compared by value


class ExtraNetwork:
    """Base of a network kind (the webui's LoRA, hypernetworks …), registered under `name`."""

    def __init__(self, name):
        self.name = name

    def activate(self, p, params_list):
        raise NotImplementedError

    def deactivate(self, p):
        raise NotImplementedError


def register_extra_network(extra_network):
    """Make `extra_network` answer to tags named after it."""
    extra_network_registry[extra_network.name] = extra_network


def register_extra_network_alias(extra_network, alias):
    extra_network_aliases[alias] = extra_network


def lookup_extra_networks(extra_network_data):
    """{network: its arguments from every tag naming it or an alias of it}; unknown names are logged and skipped."""
    found: dict[ExtraNetwork, list] = {}
    for name, params in extra_network_data.items():
        network = extra_network_registry.get(name) or extra_network_aliases.get(name)
        if network is None:
            logger.info("Skipping unknown extra network: %s", name)
            continue
        found.setdefault(network, []).extend(params)
    return found


def activate(p, extra_network_data):
    named = lookup_extra_networks(extra_network_data)
    everyone = {**named, **{net: [] for net in extra_network_registry.values() if net not in named}}
    for network, params in everyone.items():
        try:
            network.activate(p, params)
        except Exception as e:  # the webui shows the error and goes on with the other networks
            errors.display(e, f"activating extra network {network.name} with arguments {params}")

    if p.scripts is not None:
        p.scripts.after_extra_networks_activate(
            p,
            batch_number=p.iteration,
            prompts=p.prompts,
            seeds=p.seeds,
            subseeds=p.subseeds,
            extra_network_data=extra_network_data,
        )


def deactivate(p, extra_network_data):
    for network in lookup_extra_networks(extra_network_data):
        try:
            network.deactivate(p)
        except Exception as e:
            errors.display(e, f"deactivating extra network {network.name}")


def parse_prompt(prompt):
    """(the prompt without its tags, {network name: [ExtraNetworkParams, …]})."""
    wanted: defaultdict[str, list[ExtraNetworkParams]] = defaultdict(list)
    for tag in _TAG.finditer(prompt):
        wanted[tag.group(1)].append(ExtraNetworkParams(items=tag.group(2).split(":")))
    return _TAG.sub("", prompt), wanted


def parse_prompts(prompts):
    """Every prompt without its tags, and the tags of the first prompt (the webui activates those for the batch)."""
    parsed = [parse_prompt(prompt) for prompt in prompts]
    return [text for text, _ in parsed], (parsed[0][1] if parsed else None)
