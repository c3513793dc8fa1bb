"""Losses, metrics, trainer, evaluation."""
