"""Analysis of trained networks: plots (and, later, latent statistics)."""
