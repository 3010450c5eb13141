"""Storage pools: where images and container root filesystems live."""
