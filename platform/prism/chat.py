"""``prism chat``: a terminal conversation with a running server through the ``openai`` client.

Each line read is the next user message; the answer streams back piece by piece. ``/reset``
forgets the conversation, ``/exit`` or end of input quits, and Ctrl-C during an answer
closes its stream (which aborts the request on the server) and returns to the prompt.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import TextIO

import openai
from openai import OpenAI

from prism.errors import ModelNotFound

PROMPT = "you> "
RESET_COMMAND = "/reset"
EXIT_COMMAND = "/exit"

Message = dict[str, str]


def first_model_id(client: OpenAI) -> str:
    """The id of the first model the server lists."""
    models = client.models.list().data
    if not models:
        raise ModelNotFound(f"the server at {client.base_url} serves no model")
    return models[0].id


def describe_api_error(error: openai.APIError, url: str) -> str:
    """One line saying what went wrong: the server unreachable, or its error message."""
    if isinstance(error, openai.APIConnectionError):
        return f"cannot reach {url}: {error.__cause__ or error.message}"
    return error.message


class ChatSession:
    """A conversation with one served model: the system prompt, the history, the settings."""

    def __init__(
        self,
        client: OpenAI,
        model: str,
        system: str | None = None,
        temperature: float = 0.7,
        max_tokens: int = 512,
    ) -> None:
        self.client = client
        self.model = model
        self.system: list[Message] = [{"role": "system", "content": system}] if system else []
        self.temperature = temperature
        self.max_tokens = max_tokens
        self.history: list[Message] = []

    def reset(self) -> None:
        """Forget every exchange so far (the system prompt stays)."""
        self.history = []

    def ask(self, text: str) -> Iterator[str]:
        """Send ``text`` as the next user message and yield its answer piece by piece.

        The exchange joins the history once any of the answer has arrived: all of it, or
        what came before the caller closed the generator. A request that fails before that
        leaves no trace. Closing the generator closes the stream, aborting the request.
        """
        messages = [*self.history, {"role": "user", "content": text}]
        pieces: list[str] = []
        try:
            with self.client.chat.completions.create(
                model=self.model,
                messages=[*self.system, *messages],
                temperature=self.temperature,
                max_tokens=self.max_tokens,
                stream=True,
            ) as stream:
                for chunk in stream:
                    piece = chunk.choices[0].delta.content if chunk.choices else None
                    if piece:
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

    Ctrl-C during an answer stops only that answer. An error the server answers with is
    reported and the conversation goes on; a lost connection ends it (the
    ``openai.APIConnectionError`` propagates).
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
        error: openai.APIError | None = None
        try:
            with contextlib.closing(session.ask(line)) as answer:
                for piece in answer:
                    answered = True
                    write(piece)
        except KeyboardInterrupt:
            answered = True  # end the line the stopped answer (or the ^C) is on
        except openai.APIConnectionError:
            raise
        except openai.APIError as failure:
            error = failure
        if answered:
            write("\n")
        if error is not None:
            report_error(describe_api_error(error, str(session.client.base_url)))


def enable_line_editing() -> None:
    """Give ``input()`` line editing and history where the platform has ``readline``."""
    with contextlib.suppress(ImportError):
        import readline  # noqa: F401 (importing it is what enables editing)
