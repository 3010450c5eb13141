"""The state layer: the host's SQLite record of what exists (pools, profiles, images,
containers) plus the lock that serialises changes. The kernel stays the truth for whether a
container runs; the record says what sysmgr created and how to find it again."""
