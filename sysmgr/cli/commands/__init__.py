"""One module per noun of the CLI; each is imported only when its command runs."""
