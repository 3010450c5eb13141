"""Drivers: one interface per area (runtime, storage, network), registered by name.

Drivers are the bottom layer: they know the kernel and host tools, and nothing of manifests,
plans or the state database. Real drivers are loaded lazily so importing the CLI stays cheap.
"""
