"""OpenAI's Responses API through the edge, with the official openai SDK unchanged:
plain and streamed responses on several models, a function-calling round trip,
json_schema output, refusals of what needs stored state, a break after output, and
the same money as a chat completion."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import httpx
import openai
import orjson
import pytest
from aiport.v1 import billing_pb2_grpc
from openai.types.responses import FunctionToolParam, Response, ResponseInputParam

from tests.integration.conftest import Account, NewAccount, balance_micros, usage_records

WEATHER: FunctionToolParam = {
    "type": "function",
    "name": "get_weather",
    "description": "Get the current weather for a city",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
        "additionalProperties": False,
    },
    "strict": True,
}
HAIKU = "Write a haiku about Jakarta traffic."
MODELS = ["deepseek-v4-flash", "gpt-5.4-mini", "claude-sonnet-4-6", "gemini-3.5-flash"]


@pytest.fixture
def client(base_url: str, account: Account) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{base_url}/v1", api_key=account.api_key, max_retries=0)


def last_upstream_body(sandbox: httpx.Client) -> dict[str, Any]:
    seen = sandbox.get("/_sandbox/requests").json()[-1]
    body = seen["body"] if "body" in seen else seen
    assert isinstance(body, dict)
    return body


@pytest.mark.parametrize("model", MODELS)
def test_a_plain_response(client: openai.OpenAI, model: str) -> None:
    response = client.responses.create(model=model, input=HAIKU, instructions="Be brief.")
    assert response.id.startswith("resp_")
    assert (response.object, response.status, response.model) == ("response", "completed", model)
    assert response.output_text
    (message,) = response.output
    assert message.type == "message" and message.role == "assistant"
    assert response.instructions == "Be brief."
    assert response.to_dict()["store"] is False  # not in the SDK's model; sent
    assert response.usage is not None
    assert response.usage.input_tokens > 0 and response.usage.output_tokens > 0
    assert response.usage.total_tokens == (
        response.usage.input_tokens + response.usage.output_tokens
    )


@pytest.mark.parametrize("model", ["deepseek-v4-flash", "claude-haiku-4-5", "gpt-5.4-mini"])
def test_a_stream_through_the_sdks_helper(client: openai.OpenAI, model: str) -> None:
    # responses.stream() replays every event through the SDK's strict accumulator.
    with client.responses.stream(model=model, input=HAIKU) as stream:
        deltas = [e.delta for e in stream if e.type == "response.output_text.delta"]
        final = stream.get_final_response()
    assert deltas and final.output_text == "".join(deltas)
    assert final.status == "completed"
    assert final.usage is not None and final.usage.output_tokens > 0


def test_the_raw_event_sequence(client: openai.OpenAI) -> None:
    events = list(client.responses.create(model="deepseek-v4-flash", input=HAIKU, stream=True))
    kinds = [e.type for e in events]
    assert kinds[:4] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
    ]
    assert set(kinds[4:-4]) == {"response.output_text.delta"}
    assert kinds[-4:] == [
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert [e.sequence_number for e in events] == list(range(len(events)))


def test_a_function_calling_round_trip(client: openai.OpenAI, sandbox: httpx.Client) -> None:
    question: ResponseInputParam = [{"role": "user", "content": "Weather in Jakarta?"}]
    first = client.responses.create(model="deepseek-v4-flash", input=question, tools=[WEATHER])
    (call,) = [item for item in first.output if item.type == "function_call"]
    assert call.name == "get_weather" and orjson.loads(call.arguments)["city"]
    sandbox.delete("/_sandbox/requests")
    second = client.responses.create(
        model="deepseek-v4-flash",
        tools=[WEATHER],
        # The previous output goes back as it is, then the function's result.
        input=[
            *question,
            *first.output,  # type: ignore[list-item]
            {"type": "function_call_output", "call_id": call.call_id, "output": "31C"},
        ],
    )
    assert second.output_text and second.status == "completed"
    sent = last_upstream_body(sandbox)["messages"]
    assert sent[1]["tool_calls"][0]["id"] == call.call_id
    assert sent[2] == {"role": "tool", "tool_call_id": call.call_id, "content": "31C"}


def test_a_streamed_function_call(client: openai.OpenAI) -> None:
    with client.responses.stream(
        model="gpt-5.4-mini",
        input="Weather in Bandung?",
        tools=[WEATHER],
        tool_choice={"type": "function", "name": "get_weather"},
    ) as stream:
        final = stream.get_final_response()
    (call,) = [item for item in final.output if item.type == "function_call"]
    assert call.name == "get_weather"
    assert call.parsed_arguments == orjson.loads(call.arguments)  # type: ignore[union-attr]


def test_json_schema_output(client: openai.OpenAI, sandbox: httpx.Client) -> None:
    schema = {
        "type": "object",
        "properties": {"city": {"type": "string"}, "celsius": {"type": "integer"}},
        "required": ["city", "celsius"],
        "additionalProperties": False,
    }
    response = client.responses.create(
        model="gpt-5.4-mini",
        input="Jakarta's weather as JSON.",
        text={
            "format": {"type": "json_schema", "name": "weather", "schema": schema, "strict": True}
        },
    )
    answer = orjson.loads(response.output_text)
    assert set(answer) == {"city", "celsius"} and isinstance(answer["celsius"], int)
    assert response.text is not None and response.text.format is not None
    assert response.text.format.type == "json_schema"
    sent = last_upstream_body(sandbox)
    assert sent["response_format"]["json_schema"]["schema"] == schema


def test_reasoning_comes_back_as_a_reasoning_item(client: openai.OpenAI) -> None:
    response = client.responses.create(
        model="deepseek-v4-pro",
        input="think [sim:reasoning=5]",
        reasoning={"effort": "medium"},
    )
    kinds = [item.type for item in response.output]
    assert kinds == ["reasoning", "message"]
    assert response.usage is not None and response.usage.output_tokens_details.reasoning_tokens
    with client.responses.stream(
        model="deepseek-v4-pro", input="think [sim:reasoning=5]", reasoning={"effort": "low"}
    ) as stream:
        final = stream.get_final_response()
    assert [item.type for item in final.output] == ["reasoning", "message"]


def test_stored_state_is_refused_by_name(client: openai.OpenAI) -> None:
    for fields in (
        {"store": True},
        {"previous_response_id": "resp_abc"},
        {"conversation": "conv_abc"},
        {"background": True},
    ):
        with pytest.raises(openai.BadRequestError) as refused:
            client.responses.create(model="deepseek-v4-flash", input=HAIKU, **fields)  # type: ignore[call-overload]
        assert refused.value.param == next(iter(fields))
    # Nothing is stored, so there is nothing to fetch.
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve("resp_abc")


def test_errors_have_openais_shape(base_url: str, new_account: NewAccount) -> None:
    wrong = openai.OpenAI(base_url=f"{base_url}/v1", api_key="aip_live_nope", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        wrong.responses.create(model="deepseek-v4-flash", input=HAIKU)
    broke = new_account("0")
    client = openai.OpenAI(base_url=f"{base_url}/v1", api_key=broke.api_key, max_retries=0)
    with pytest.raises(openai.RateLimitError) as low:
        client.responses.create(model="deepseek-v4-flash", input=HAIKU)
    assert low.value.code == "insufficient_quota"
    with pytest.raises(openai.NotFoundError):
        client.responses.create(model="no-such-model", input=HAIKU)
    with pytest.raises(openai.BadRequestError) as bad:
        client.responses.create(model="deepseek-v4-flash", input=HAIKU, max_output_tokens=4)
    assert bad.value.param == "max_output_tokens"
    raw = httpx.post(
        f"{base_url}/v1/responses",
        headers={"Authorization": f"Bearer {broke.api_key}"},
        json={"model": "deepseek-v4-flash", "input": HAIKU, "tools": [{"type": "web_search"}]},
    )
    assert raw.status_code == 400
    assert raw.json()["error"]["param"] == "tools[0].type"


def test_a_break_after_output_is_response_failed(client: openai.OpenAI) -> None:
    events = list(
        client.responses.create(
            model="deepseek-v4-flash", input="hello [sim:fail-after=3]", stream=True
        )
    )
    assert events[-1].type == "response.failed"
    assert events[-1].response.status == "failed"
    assert events[-1].response.error is not None
    assert events[-1].response.error.code == "server_error"
    assert "response.completed" not in [e.type for e in events]


def test_a_response_costs_what_its_usage_record_says(
    new_account: NewAccount, billing: billing_pb2_grpc.BillingStub, base_url: str
) -> None:
    account = new_account("100000")
    start = balance_micros(billing, account.account_id)
    client = openai.OpenAI(base_url=f"{base_url}/v1", api_key=account.api_key, max_retries=0)
    response: Response = client.responses.create(
        model="kimi-k2.6", input="hello [sim:tokens=7]", max_output_tokens=128
    )
    spent = start - balance_micros(billing, account.account_id)
    assert spent > 0
    (record,) = usage_records(base_url, account.api_key)
    assert (record["endpoint"], record["model"], record["status"]) == (
        "responses",
        "kimi-k2.6",
        "succeeded",
    )
    assert Decimal(record["cost_idr"]) * 1_000_000 == spent
    assert response.usage is not None
    assert record["output_tokens"] == response.usage.output_tokens == 7
