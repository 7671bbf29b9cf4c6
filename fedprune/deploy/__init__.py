"""Flower-free helpers of a deployment: certificates and keys, node configs, local processes."""
