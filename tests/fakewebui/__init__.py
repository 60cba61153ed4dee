"""A test double of AUTOMATIC1111's stable-diffusion-webui v1.10.1 (its `modules.*` surface) for the extension's tests.

`fakewebui.fixture.webui()` puts `tests/fakewebui` on `sys.path`, so `import modules.shared` finds the fake package in
`tests/fakewebui/modules/`. See README.md for what each fake file mirrors and leaves out.
"""
