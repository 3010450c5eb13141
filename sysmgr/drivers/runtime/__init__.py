"""Container runtimes: turn a bundle (OCI config.json + rootfs) into a running init."""
