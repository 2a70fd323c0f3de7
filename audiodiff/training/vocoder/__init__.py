"""The vocoder stage: its GAN task (`task`) and run (`run`)."""
