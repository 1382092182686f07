"""``prism chat``: a terminal conversation with a running server, over HTTP or gRPC.

Each line read is the next user message; the answer streams back piece by piece. ``/reset``
forgets the conversation, ``/exit`` or end of input quits, and Ctrl-C during an answer
closes its stream (which aborts the request on the server) and returns to the prompt.
The protocol is a :data:`StreamReply`: :func:`openai_replies` (the OpenAI API through the
``openai`` client) or :func:`grpc_replies` (``prism.v1.Generation/Chat``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Generator
from typing import TYPE_CHECKING, TextIO, cast

import grpc
import openai
from openai import OpenAI

from prism.client import PrismClient, describe_rpc_error
from prism.errors import ModelNotFound, PrismError

if TYPE_CHECKING:
    from openai.types.chat import ChatCompletionMessageParam

PROMPT = "you> "
RESET_COMMAND = "/reset"
EXIT_COMMAND = "/exit"

Message = dict[str, str]
StreamReply = Callable[[list[Message]], Generator[str, None, None]]
"""Streams the answer to a conversation piece by piece; closing it aborts the request.

Raises :class:`ReplyFailed` when the server refuses the request; an unreachable server
raises the protocol's own error, which ends the conversation.
"""


class ReplyFailed(PrismError):
    """The server answered a message with an error; the conversation goes on."""


def first_model(client: OpenAI | PrismClient) -> str:
    """The id of the first model the server lists, over HTTP (openai) or gRPC (Prism)."""
    if isinstance(client, PrismClient):
        ids, server = [model.id for model in client.list_models()], client.target
    else:
        ids, server = [model.id for model in client.models.list().data], str(client.base_url)
    if not ids:
        raise ModelNotFound(f"the server at {server} serves no model")
    return ids[0]


def describe_api_error(error: openai.APIError, url: str) -> str:
    """One line saying what went wrong: the server unreachable, or its error message."""
    if isinstance(error, openai.APIConnectionError):
        return f"cannot reach {url}: {error.__cause__ or error.message}"
    return error.message


def openai_replies(client: OpenAI, model: str, temperature: float, max_tokens: int) -> StreamReply:
    """Answers streamed by the OpenAI chat completions API; a lost connection propagates
    (``openai.APIConnectionError``)."""
    url = str(client.base_url)

    def stream(messages: list[Message]) -> Generator[str, None, None]:
        try:
            with client.chat.completions.create(
                model=model,
                messages=cast("list[ChatCompletionMessageParam]", messages),
                temperature=temperature,
                max_tokens=max_tokens,
                stream=True,
            ) as chunks:
                for chunk in chunks:
                    piece = chunk.choices[0].delta.content if chunk.choices else None
                    if piece:
                        yield piece
        except openai.APIConnectionError:
            raise
        except openai.APIError as error:
            raise ReplyFailed(describe_api_error(error, url)) from error

    return stream


def grpc_replies(
    client: PrismClient, model: str, temperature: float, max_tokens: int
) -> StreamReply:
    """Answers streamed by ``prism.v1.Generation/Chat``; every failed call is a
    :class:`ReplyFailed`."""

    def stream(messages: list[Message]) -> Generator[str, None, None]:
        try:
            with client.chat(
                model, messages, temperature=temperature, max_tokens=max_tokens
            ) as replies:
                for reply in replies:
                    if reply.text:
                        yield reply.text
        except grpc.RpcError as error:
            raise ReplyFailed(describe_rpc_error(error)) from error

    return stream


class ChatSession:
    """A conversation: the system prompt, the history, and how answers are streamed."""

    def __init__(self, stream_reply: StreamReply, system: str | None = None) -> None:
        self.stream_reply = stream_reply
        self.system: list[Message] = [{"role": "system", "content": system}] if system else []
        self.history: list[Message] = []

    def reset(self) -> None:
        """Forget every exchange so far (the system prompt stays)."""
        self.history = []

    def ask(self, text: str) -> Generator[str, None, None]:
        """Send ``text`` as the next user message and yield its answer piece by piece.

        The exchange joins the history once any of the answer has arrived: all of it, or
        what came before the caller closed the generator. A request that fails before that
        leaves no trace. Closing the generator closes the stream, aborting the request.
        """
        messages = [*self.history, {"role": "user", "content": text}]
        pieces: list[str] = []
        try:
            with contextlib.closing(self.stream_reply([*self.system, *messages])) as reply:
                for piece in reply:
                    pieces.append(piece)
                    yield piece
        finally:
            if pieces:
                answer = {"role": "assistant", "content": "".join(pieces)}
                self.history = [*messages, answer]


def converse(
    session: ChatSession,
    read_line: Callable[[str], str],
    out: TextIO,
    report_error: Callable[[str], None],
    prompt: str = PROMPT,
) -> None:
    """Answer the lines ``read_line`` returns until ``/exit``, end of input or Ctrl-C.

    Ctrl-C during an answer stops only that answer. An error the server answers with
    (:class:`ReplyFailed`) is reported and the conversation goes on; any other error, such
    as a lost connection, ends it.
    """

    def write(text: str) -> None:
        out.write(text)
        out.flush()

    while True:
        try:
            line = read_line(prompt).strip()
        except (EOFError, KeyboardInterrupt):
            write("\n" if prompt else "")
            return
        if line == EXIT_COMMAND:
            return
        if line == RESET_COMMAND:
            session.reset()
            continue
        if not line:
            continue
        answered = False
        error: ReplyFailed | None = None
        try:
            with contextlib.closing(session.ask(line)) as answer:
                for piece in answer:
                    answered = True
                    write(piece)
        except KeyboardInterrupt:
            answered = True  # end the line the stopped answer (or the ^C) is on
        except ReplyFailed as failure:
            error = failure
        if answered:
            write("\n")
        if error is not None:
            report_error(str(error))


def enable_line_editing() -> None:
    """Give ``input()`` line editing and history where the platform has ``readline``."""
    with contextlib.suppress(ImportError):
        import readline  # noqa: F401 (importing it is what enables editing)
