"""The web app's tests: its API through gradio_client and its pages in a real browser."""
