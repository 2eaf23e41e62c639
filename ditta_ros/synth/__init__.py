"""Procedural Cityscapes-style driving video with labels for every frame (ditta-synth)."""
