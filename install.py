"""Run by the webui at start-up (as its own process, cwd = the webui root) to install missing dependencies.

Dump U-Net needs only what the webui already ships (torch, numpy, Pillow, einops), so on a normal install this
does nothing. It never installs or upgrades torch, and it honours --skip-install (the webui's `run_pip` returns at
once then).
"""

from __future__ import annotations

import importlib.metadata

import launch

# (distribution, import name, lowest version that works) — floors only, never pins.
REQUIREMENTS = [
    ("numpy", "numpy", "1.23"),
    ("Pillow", "PIL", "9.5"),
    ("einops", "einops", "0.4"),
]


def _older(installed: str, floor: str) -> bool:
    def parts(v: str) -> tuple[int, ...]:
        return tuple(int(p) for p in v.split("+")[0].split(".")[:3] if p.isdigit())

    return parts(installed) < parts(floor)


def main() -> None:
    if not launch.is_installed("torch"):
        print("[Dump U-Net] torch is missing; install the webui's own torch first (this extension never installs it).")
    for dist, module, floor in REQUIREMENTS:
        try:
            version = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            version = None
        if version is None and launch.is_installed(module):
            continue
        if version is None or _older(version, floor):
            launch.run_pip(f'install "{dist}>={floor}"', f"{dist}>={floor} for Dump U-Net")


main()
