"""A local web page for text-to-audio generation (standard library HTTP server; see `audiodiff.web.server`)."""
