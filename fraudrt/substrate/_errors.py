class SubstrateError(Exception):
    """A substrate service could not be found, started or reached; the message says what to do."""
