"""Alignment Lab: the alignment recipe for language models on one machine, usable without the UI."""
