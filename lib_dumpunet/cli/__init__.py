"""The `dumpunet` command line (also `python -m lib_dumpunet`): Dump U-Net's jobs on a local diffusers model.

`main` parses the options and checks them before anything heavy is imported; `job` loads the model and runs the
job through `lib_dumpunet.diffusers`; `files` names and writes the PNGs as the webui does; `page` writes index.html.
"""

from __future__ import annotations

from lib_dumpunet.cli.main import main

__all__ = ["main"]
