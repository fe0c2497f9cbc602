"""What a request would hold and is expected to cost, without making it. Pure.

POST /v1/quote takes {"path": <a paid endpoint's path>, "body": <its request body>}.
The body goes through that endpoint's own parser (the same limits and the same
400s, their `param` prefixed with `body.`) and the same pricing the call itself
uses, so a quote and the call it describes never disagree:

  text (chat, text completions, messages, responses)
    hold_idr          = pricing.hold_micros: the worst case, reserved before the call
    expected_cost_idr = the prompt at ~4 characters a token, at the input price, plus
                        every output token the call allows at the output price (what
                        the call costs if the model writes all it may; less if it stops
                        sooner, more only when the prompt tokenizes worse than 4 a token,
                        never above the hold)
  a job (image, video)
    hold_idr = expected_cost_idr = the job's price: units (images, or seconds, with
                        any minimum) times the unit price. A job that fails costs nothing.

No upstream is called and no money is held.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson

from services.common.catalog import Catalog
from services.common.money import ceil_div
from services.common.usage import estimate_usage
from services.gateway import errors
from services.gateway.chat_request import ChatCall, parse_chat_request
from services.gateway.errors import PublicError
from services.gateway.generate_request import (
    JobPlan,
    parse_image_generate,
    parse_image_img2img,
    parse_video_generate,
    parse_video_img2video,
    parse_video_multimodal,
)
from services.gateway.messages_request import parse_messages_request
from services.gateway.pricing import TOKENS_PER_MILLION, hold_micros
from services.gateway.responses_request import parse_responses_request


def _responses(raw: bytes, catalog: Catalog) -> ChatCall:
    return parse_responses_request(raw, catalog).chat


TextParser = Callable[[bytes, Catalog], ChatCall]
JobParser = Callable[[bytes, Catalog], JobPlan]

# Every paid endpoint a quote can describe, by its public path, with its own parser.
TEXT_PATHS: dict[str, TextParser] = {
    "/v1/chat/completions": parse_chat_request,
    "/v1/text/completions": parse_chat_request,
    "/v1/messages": parse_messages_request,
    "/v1/responses": _responses,
}
JOB_PATHS: dict[str, JobParser] = {
    "/v1/image/generate": parse_image_generate,
    "/v1/image/img2img": parse_image_img2img,
    "/v1/video/generate": parse_video_generate,
    "/v1/video/img2video": parse_video_img2video,
    "/v1/video/multimodal": parse_video_multimodal,
}
QUOTE_FIELDS = ("path", "body")


@dataclass(frozen=True, slots=True)
class Quote:
    path: str
    model: str
    hold_micros: int
    expected_cost_micros: int
    # Text: the prompt-token estimate and the output tokens allowed (every choice).
    prompt_tokens: int = 0
    max_output_tokens: int = 0
    # A job: billable units (images, or seconds) and the price of one.
    units: int = 0
    unit_price_micros: int = 0


def _text_quote(path: str, call: ChatCall) -> Quote:
    model = call.model
    prompt = estimate_usage(prompt_chars=call.prompt_chars, image_parts=call.image_parts)
    output_tokens = call.choices * call.max_output_tokens
    hold = hold_micros(call)
    expected = ceil_div(
        prompt.prompt_tokens * model.input_micros_per_m + output_tokens * model.output_micros_per_m,
        TOKENS_PER_MILLION,
    )
    return Quote(
        path=path,
        model=model.id,
        hold_micros=hold,
        # The hold is the bound: an estimate above it would promise what cannot happen.
        expected_cost_micros=min(expected, hold),
        prompt_tokens=prompt.prompt_tokens,
        max_output_tokens=output_tokens,
    )


def _job_quote(path: str, plan: JobPlan) -> Quote:
    cost = plan.estimated_cost_micros
    return Quote(
        path=path,
        model=plan.model,
        hold_micros=cost,
        expected_cost_micros=cost,
        units=max(plan.estimated_units, plan.min_billable_units),
        unit_price_micros=plan.unit_price_micros,
    )


def _in_body(error: PublicError) -> PublicError:
    """The endpoint's own 400, its field named inside the quote's `body`."""
    param = f"body.{error.param}" if error.param else "body"
    return dataclasses.replace(error, param=param)


def quote(raw: bytes, catalog: Catalog) -> Quote:
    """The quote for a POST /v1/quote body, or the 400/404 that request would get."""
    request = errors.json_object_body(raw)
    unknown = sorted(set(request) - set(QUOTE_FIELDS))
    if unknown:
        raise errors.invalid_request(
            f"Unknown field '{unknown[0]}': a quote takes 'path' and 'body'.", unknown[0]
        )
    path = request.get("path")
    paths = (*TEXT_PATHS, *JOB_PATHS)
    if not isinstance(path, str) or path not in paths:
        raise errors.invalid_request(
            f"'path' must be one of: {', '.join(paths)}.",
            "path",
        )
    body: Any = request.get("body")
    if not isinstance(body, dict):
        raise errors.invalid_request(
            "'body' must be the endpoint's request, a JSON object.", "body"
        )
    endpoint_raw = orjson.dumps(body)
    try:
        if path in TEXT_PATHS:
            return _text_quote(path, TEXT_PATHS[path](endpoint_raw, catalog))
        return _job_quote(path, JOB_PATHS[path](endpoint_raw, catalog))
    except PublicError as error:
        if error.status != 400:
            raise  # a 404 for an unknown model says so as it is
        raise _in_body(error) from None


__all__ = ["JOB_PATHS", "TEXT_PATHS", "Quote", "quote"]
