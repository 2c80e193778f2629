"""OpenAI's chat-completions wire as costwise speaks it, in one place for its three users: the provider worker (an
external API), the worker fronting an engine server (``vllm serve``, SGLang, TGI, llama.cpp) and the bench's
recording server. Request, answer, streamed chunk and error Structs; server-sent events; streamed answers, read
whole or raised as broken; the retry policy."""

from ._chat import (
    ChatChunk,
    ChatCompletion,
    ChatRequest,
    Choice,
    ChunkChoice,
    Delta,
    ErrorBody,
    ErrorDetail,
    Logprobs,
    Message,
    PromptDetails,
    StreamOptions,
    TokenLogprob,
    WireUsage,
    estimated_usage,
    finish_reason,
    logprob_summary,
)
from ._stream import StreamCut, StreamError, chat_chunks
from ._transport import RETRYABLE_STATUS, SSE_DONE, TooLarge, backoff_s, read_limited, sse_data, sse_event

__all__ = [
    "RETRYABLE_STATUS",
    "SSE_DONE",
    "ChatChunk",
    "ChatCompletion",
    "ChatRequest",
    "Choice",
    "ChunkChoice",
    "Delta",
    "ErrorBody",
    "ErrorDetail",
    "Logprobs",
    "Message",
    "PromptDetails",
    "StreamCut",
    "StreamError",
    "StreamOptions",
    "TokenLogprob",
    "TooLarge",
    "WireUsage",
    "backoff_s",
    "chat_chunks",
    "estimated_usage",
    "finish_reason",
    "logprob_summary",
    "read_limited",
    "sse_data",
    "sse_event",
]
