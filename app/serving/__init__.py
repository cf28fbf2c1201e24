"""Serving faces: the JSON wire form of render requests and outcomes, and the Ray Serve deployment."""
