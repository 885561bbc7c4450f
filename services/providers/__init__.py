"""Lead sources: each provider's signature check and its mapping from a raw request to lead captures."""
