"""The model layer: manifests loaded from YAML, validated, and profiles expanded.

Pure: no kernel, no state database. Values are LXD-shaped (flat dotted ``config`` keys,
named ``devices`` maps with ``type``) and every config value is kept as a string, as LXD does.
"""
