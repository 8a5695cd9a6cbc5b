"""consentry's command line (`consentry`, docs/cli.md)."""
