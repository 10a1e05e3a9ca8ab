"""One module per check; each registers itself with ``registry.register`` when imported.

``registry.all_checks`` imports every module here, so a new check is a new module: a
function from a ``CheckContext`` to ``context.result(...)`` (or None when there is
nothing to measure), its threshold beside it.
"""
