"""The benchmark: ``dealstream bench``."""
