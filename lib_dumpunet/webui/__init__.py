"""The webui adapter: the only part of Dump U-Net that imports the webui's `modules.*` and gradio.

`entry` is what scripts/dumpunet.py calls; `engine` drives a job through the webui's processing callbacks; `host`
reads the webui (encoder, tokens, denoiser calls); `ui` builds the gradio UI; `info` the Selected Layer Info panel;
`outputs` puts maps in the gallery and on disk; `infotext` writes and restores settings; `xyz` adds the X/Y/Z axes.
"""
