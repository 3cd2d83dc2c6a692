"""Store maintenance: `hvt store check` (is every promise kept?) and `hvt store gc` (retention).

Both read dataset versions and the registry, so they stand above ``hvt.ingest`` and ``hvt.registry``. Nothing is
imported here eagerly: the CLI's parser imports this package's modules only when a command runs.
"""
