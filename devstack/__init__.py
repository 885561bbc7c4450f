"""The dev stack: nats-server, PostgreSQL, the API and the workers on one machine (dealstream dev, the tests)."""
