"""Serving: controller, model workers, the OpenAI-compatible API, the Gradio web demo and the CLI chat."""
