"""The default configs, shipped as package data (in a checkout: the repository's configs/, also DVC params)."""
