"""audiodiff.nn."""
