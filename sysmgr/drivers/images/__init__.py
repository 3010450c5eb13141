"""Image builders and importers: produce a root filesystem directory plus its metadata."""
