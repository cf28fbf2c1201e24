"""The Gradio web app (``medley serve``): Generate, Library and Train tabs that call the core.

Import :mod:`app.web.app` for ``build_app`` / ``launch`` (it imports gradio); this package
itself stays light so ``medley --help`` does not load gradio.
"""

from app.web.services import AdapterRow, GenerateRequest, MedleyServices, WebConfig, WebInputError

__all__ = ["AdapterRow", "GenerateRequest", "MedleyServices", "WebConfig", "WebInputError"]
