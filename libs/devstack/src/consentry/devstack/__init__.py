"""Embedded development stack: PostgreSQL (pgserver) and Tansu for `make run` and the tests.

Submodules are imported on use (`consentry.devstack.postgres`, `.broker`, `.processes`,
`.stack`, `.services`) so that importing this package (e.g. as a pytest plugin) stays cheap.
"""
