"""The Ollama provider: ``POST /api/chat`` (NDJSON stream), ``GET /api/tags``,
``POST /api/embed``."""

from __future__ import annotations

from typing import Any

from .._errors import LLMError
from ._lines import excerpt
from ._ndjson import NDJSONChatParser, error_message
from ._provider import HTTPProvider

__all__ = ["OllamaProvider"]


class OllamaProvider(HTTPProvider):
    """An Ollama server, e.g. ``OllamaProvider("http://127.0.0.1:11434", "llama3.2")``.

    See :class:`HTTPProvider` for the interface. Ollama streams unless told
    not to, so every chat request says ``"stream"`` explicitly.
    """

    kind = "ollama"
    chat_path = "api/chat"
    models_path = "api/tags"
    embed_path = "api/embed"

    def chat_body(self, messages: list[dict[str, str]], model: str, *, stream: bool) -> Any:
        return {"model": model, "messages": messages, "stream": stream}

    def parser(self) -> NDJSONChatParser:
        return NDJSONChatParser()

    def answer_text(self, answer: Any) -> str:
        if isinstance(answer, dict) and "error" in answer:
            raise LLMError(f"{self.label} reported an error: {error_message(answer['error'])}")
        message = answer.get("message") if isinstance(answer, dict) else None
        content = message.get("content") if isinstance(message, dict) else None
        if not isinstance(content, str):
            raise LLMError(f"{self.label} sent an answer without text: {excerpt(str(answer))}")
        return content

    def model_names(self, listing: Any) -> list[str]:
        return [str(model["name"]) for model in listing["models"]]

    def embed_body(self, texts: list[str], model: str) -> Any:
        return {"model": model, "input": texts}

    def embedding_vectors(self, answer: Any) -> list[list[float]]:
        if isinstance(answer, dict) and "error" in answer:
            raise LLMError(f"{self.label} reported an error: {error_message(answer['error'])}")
        vectors = answer["embeddings"]
        if not isinstance(vectors, list):
            raise TypeError("embeddings is not a list")
        return vectors
