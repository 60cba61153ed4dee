"""The fake `modules` package: AUTOMATIC1111 webui v1.10.1's extension-facing modules, small and true to their names.

Importable only with `tests/fakewebui` first on `sys.path` (see `fakewebui.fixture`).
"""
