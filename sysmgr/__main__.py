"""``python -m sysmgr``: the same entry point as the ``sysmgr`` console script."""

from sysmgr.cli.fast import main

if __name__ == "__main__":
    main()
