"""Ingestion: landing files into the lake."""
