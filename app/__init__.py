"""The faces of Medley: the `medley` command line (and, later, the Gradio app)."""
