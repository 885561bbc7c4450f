"""The language of Dealstream: event types, the envelope, subject names, the codec and the event store."""
