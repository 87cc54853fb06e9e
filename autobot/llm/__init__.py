"""The LLM layer: chat with Ollama or any OpenAI-compatible server, streamed, on deadlines.

Open the configured LLM and stream an answer::

    from autobot.llm import open_llm, LLMStreamError, LLMStreamTimeout

    async with open_llm("ollama", "http://127.0.0.1:11434", "llama3.2") as llm:
        try:
            async with llm.stream([{"role": "user", "content": "Hi"}]) as answer:
                async for delta in answer:
                    print(delta, end="")
        except (LLMStreamError, LLMStreamTimeout) as error:
            keep(error.partial)  # failed mid-answer: the text that had arrived
        # LLMUnavailable, LLMError, LLMTimeout raised on entering: nothing was streamed.
        # If the task is cancelled instead, answer.text holds what had arrived.

Every wait is a named deadline phase: ``llm.connect``, ``llm.first_token``,
``llm.idle`` (each silence between chunks), ``llm.total`` (the whole answer),
``llm.models`` (the model list). Each provider has a circuit breaker; a
:class:`FallbackChain` moves on to the next provider while one is out before
its first token. The stream parsers are sans-I/O and public, for tools that
read provider streams themselves.
"""

from .._errors import LLMError, LLMTimeout, LLMUnavailable
from .._llm_fallback import FallbackSpec, parse_fallback
from ._chain import FallbackChain
from ._events import ChatStreamParser, MalformedStream, StreamDone, StreamError, TextDelta
from ._failures import LLMStreamError, LLMStreamTimeout, is_outage
from ._health import LLMHealthCheck
from ._interface import LLM, Message
from ._ndjson import NDJSONChatParser
from ._ollama import OllamaProvider
from ._open import make_provider, open_llm
from ._openai import OpenAIProvider
from ._prompts import PromptTemplates
from ._provider import HTTPProvider
from ._sse import ServerSentEvent, SSEChatParser, SSEDecoder
from ._stream import TextStream

__all__ = [
    "LLM",
    "ChatStreamParser",
    "FallbackChain",
    "FallbackSpec",
    "HTTPProvider",
    "LLMError",
    "LLMHealthCheck",
    "LLMStreamError",
    "LLMStreamTimeout",
    "LLMTimeout",
    "LLMUnavailable",
    "MalformedStream",
    "Message",
    "NDJSONChatParser",
    "OllamaProvider",
    "OpenAIProvider",
    "PromptTemplates",
    "SSEChatParser",
    "SSEDecoder",
    "ServerSentEvent",
    "StreamDone",
    "StreamError",
    "TextDelta",
    "TextStream",
    "is_outage",
    "make_provider",
    "open_llm",
    "parse_fallback",
]
