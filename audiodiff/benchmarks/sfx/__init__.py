"""The built-in sound-effects benchmark: synthesis, captions, attribute extractors and their fitted kind classifier."""
