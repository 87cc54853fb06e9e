"""Any OpenAI-compatible server: ``POST /chat/completions`` (SSE stream), ``GET /models``,
``POST /embeddings``.

The base URL is the one the API paths hang off, ``https://api.openai.com/v1``
or ``http://127.0.0.1:8080/v1`` for llama.cpp, vLLM, LM Studio and the like.
"""

from __future__ import annotations

from typing import Any

from .._errors import LLMError
from ._lines import excerpt
from ._ndjson import error_message
from ._provider import HTTPProvider
from ._sse import SSEChatParser

__all__ = ["OpenAIProvider"]


class OpenAIProvider(HTTPProvider):
    """An OpenAI-compatible server, e.g. ``OpenAIProvider("http://127.0.0.1:8080/v1", "qwen2")``.

    See :class:`HTTPProvider` for the interface; the API key, when given, is
    sent as ``Authorization: Bearer <key>``.
    """

    kind = "openai"
    chat_path = "chat/completions"
    models_path = "models"
    embed_path = "embeddings"

    def chat_body(self, messages: list[dict[str, str]], model: str, *, stream: bool) -> Any:
        return {"model": model, "messages": messages, "stream": stream}

    def parser(self) -> SSEChatParser:
        return SSEChatParser()

    def answer_text(self, answer: Any) -> str:
        if isinstance(answer, dict) and answer.get("error") is not None:
            raise LLMError(f"{self.label} reported an error: {error_message(answer['error'])}")
        try:
            content = answer["choices"][0]["message"].get("content")
        except (KeyError, IndexError, TypeError, AttributeError):
            raise LLMError(
                f"{self.label} sent an answer without text: {excerpt(str(answer))}"
            ) from None
        if content is None:
            return ""  # a reply made only of tool calls, which AutoBot does not ask for
        if not isinstance(content, str):
            raise LLMError(f"{self.label} sent an answer without text: {excerpt(str(answer))}")
        return content

    def model_names(self, listing: Any) -> list[str]:
        return [str(model["id"]) for model in listing["data"]]

    def embed_body(self, texts: list[str], model: str) -> Any:
        return {"model": model, "input": texts}

    def embedding_vectors(self, answer: Any) -> list[list[float]]:
        if isinstance(answer, dict) and answer.get("error") is not None:
            raise LLMError(f"{self.label} reported an error: {error_message(answer['error'])}")
        items = answer["data"]
        # Each item says its input's index; servers need not keep the order.
        indexes = [item["index"] for item in items]
        if sorted(indexes) != list(range(len(items))):
            raise ValueError("the embeddings' indexes are not 0 to n-1")
        ordered = sorted(items, key=lambda item: item["index"])
        return [item["embedding"] for item in ordered]
