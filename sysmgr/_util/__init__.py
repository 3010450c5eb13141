"""Small helpers shared by every layer (no sysmgr imports above ``errors``)."""
