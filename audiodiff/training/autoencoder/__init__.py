"""The autoencoder stage: its GAN task (`task`) and run (`run`)."""
