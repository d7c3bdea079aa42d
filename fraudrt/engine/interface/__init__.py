"""Package data: the engine interface files (catalogue + gate map) the oracle reads."""
