"""Ingestion: the synthetic source generator, and landing files into the lake."""
