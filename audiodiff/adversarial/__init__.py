"""Discriminators and GAN losses, shared by the vocoder and autoencoder stages."""
