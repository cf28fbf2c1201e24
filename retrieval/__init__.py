"""Prompt -> adapters: embedders, the FAISS index, the refiner and the composer."""
