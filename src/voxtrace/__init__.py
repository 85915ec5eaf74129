"""voxtrace: video in; speaker-attributed, word-timed transcript with loudness, pitch, emotion."""

__version__ = "0.1.0"
__all__ = ["__version__"]
