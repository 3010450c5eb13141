"""The Python API: ``Client`` and its managers (pylxd's shape). The CLI's only door."""
