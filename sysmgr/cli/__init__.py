"""The ``sysmgr`` command line (click, with rich loaded only where it helps).

Thin by design: every command parses its arguments, calls :class:`sysmgr.api.Client` (the
CLI's only door into sysmgr) and renders the result. ``main.py`` holds the root group with lazily
imported subcommands and the one place that maps exceptions to exit codes; ``render.py`` holds
the table / JSON / YAML / plan / progress renderers; ``commands/<noun>.py`` one module per noun.
"""
