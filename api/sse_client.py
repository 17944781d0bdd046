"""Reading the service's metrics stream (``rayac submit --follow``, the tests): httpx-sse, minus one quirk.

httpx-sse keeps the last event id across events, so a keep-alive comment (sse-starlette sends ``: ping`` after
15 s without an event) followed by its blank line comes out as an event with no data and the previous id. The
SSE spec dispatches nothing for an empty data buffer; neither do we.
"""

from __future__ import annotations

from collections.abc import Iterator

from httpx_sse import EventSource, ServerSentEvent


def stream_events(source: EventSource) -> Iterator[ServerSentEvent]:
    """The stream's events that carry data, in order."""
    for event in source.iter_sse():
        if event.data:
            yield event
