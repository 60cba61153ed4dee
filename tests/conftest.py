"""Shared fixtures: the real ldm U-Net in its three flavours, built once per session at tiny width."""

from __future__ import annotations

import pytest
import unets


@pytest.fixture(scope="session")
def unet_for():
    """A function flavour -> U-Net that builds each flavour once per session."""
    cache = {}

    def get(flavour: unets.Flavour):
        if flavour.name not in cache:
            cache[flavour.name] = unets.build(flavour)
        return cache[flavour.name]

    return get


@pytest.fixture(params=unets.FLAVOURS, ids=lambda f: f.name)
def flavour_unet(request, unet_for):
    """(flavour, U-Net) for SD1, SD2 and SDXL layouts."""
    return request.param, unet_for(request.param)


@pytest.fixture(scope="session")
def sd1_unet(unet_for):
    return unet_for(unets.SD1)


@pytest.fixture(scope="session")
def sd2_unet(unet_for):
    return unet_for(unets.SD2)


@pytest.fixture(scope="session")
def sdxl_unet(unet_for):
    return unet_for(unets.SDXL)
