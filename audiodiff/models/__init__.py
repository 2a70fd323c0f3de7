"""Building models from configuration, the component registry and the export format."""
