"""Evaluation: metrics that take arrays and give numbers (FAD, KL, IS, CLAP score, near copies, seams, reconstruction
errors), the audio embedders they use, and the run that generates a model's clips for held-out prompts and scores
them (`run`, `report`)."""
