"""Writes to the registry, one module per domain; callers import from the module itself.

- ``signatures``: creating signatures and editing their documentation.
- ``versions``: checking specs, adding versions, building runnable DSPy programs from them.
- ``aliases``: pointing aliases at versions and removing them, with an audit record each.
- ``library``: loading the template library (its data is ``registry.library``).
- ``transfer``: importing an export document, all of it or nothing.
- ``discovery``: registering the DSPy signatures and modules a Python module defines.
- ``_common``: the author handling the others share.
"""
