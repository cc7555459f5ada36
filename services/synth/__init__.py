"""Chorus synth: Bark behind a gRPC API."""
