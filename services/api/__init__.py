"""The HTTP API: lead capture, webhooks, commands and history, versioned under ``/v1``."""
