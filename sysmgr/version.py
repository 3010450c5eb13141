"""sysmgr's version (a module of its own, below every layer: the member side of the RPC reports
it without importing the package's front door)."""

__version__ = "0.1.0"
