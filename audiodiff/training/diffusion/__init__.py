"""The diffusion stage: its Lightning task (`task`) and run (`run`)."""
