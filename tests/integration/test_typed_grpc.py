"""Typed gRPC for internal callers, straight to the gateway (not through the edge):
aiport.v1.Text (Complete, Stream) and aiport.v1.Media job creation, polled with
aiport.v1.Jobs/GetJob. The same calls inside as /v1/chat/completions and the job
endpoints: the same money, the same errors as proper gRPC statuses; reflection lists
the services; the edge refuses them."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import grpc
import httpx
import openai
import pytest
from aiport.v1 import (
    billing_pb2,
    billing_pb2_grpc,
    jobs_pb2,
    jobs_pb2_grpc,
    media_pb2,
    media_pb2_grpc,
    text_pb2,
    text_pb2_grpc,
)
from google.protobuf import descriptor_pool, json_format, message_factory, struct_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)

from deploy.local.stack import Stack
from services.common.settings import PROJECT_ROOT
from tests.integration.conftest import Account, NewAccount, balance_micros

USER = text_pb2.ROLE_USER
HAIKU = text_pb2.Message(role=USER, text="Write a haiku about Jakarta traffic.")
WEATHER = text_pb2.Tool(
    function=text_pb2.FunctionTool(
        name="get_weather",
        description="Get the current weather for a city",
        parameters=json_format.ParseDict(
            {
                "type": "object",
                "properties": {"city": {"type": "string", "description": "City name"}},
                "required": ["city"],
            },
            struct_pb2.Struct(),
        ),
    )
)
TIMEOUT = 30


@pytest.fixture(scope="module")
def gateway(stack: Stack) -> Iterator[grpc.Channel]:
    """A plain gRPC channel to the gateway, as an internal service dials it."""
    with grpc.insecure_channel(stack.config.dial_addr("gateway")) as channel:
        yield channel


@pytest.fixture(scope="module")
def text(gateway: grpc.Channel) -> text_pb2_grpc.TextStub:
    return text_pb2_grpc.TextStub(gateway)


@pytest.fixture(scope="module")
def media(gateway: grpc.Channel) -> media_pb2_grpc.MediaStub:
    return media_pb2_grpc.MediaStub(gateway)


@pytest.fixture(scope="module")
def jobs(gateway: grpc.Channel) -> jobs_pb2_grpc.JobsStub:
    return jobs_pb2_grpc.JobsStub(gateway)


def key(account: Account) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {account.api_key}"),)


def status_of(error: grpc.RpcError) -> status_pb2.Status:
    assert isinstance(error, grpc.Call)
    for name, value in error.trailing_metadata() or ():
        if name == "grpc-status-details-bin":
            assert isinstance(value, bytes)
            return status_pb2.Status.FromString(value)
    raise AssertionError("no grpc-status-details-bin")


def field_of(error: grpc.RpcError) -> str:
    bad = error_details_pb2.BadRequest()
    for detail in status_of(error).details:
        if detail.Unpack(bad):
            return str(bad.field_violations[0].field)
    raise AssertionError("no BadRequest detail")


def details(error: grpc.RpcError) -> str:
    assert isinstance(error, grpc.Call)
    return error.details() or ""


def usage_records(base_url: str, account: Account, count: int) -> list[dict[str, Any]]:
    deadline = time.monotonic() + 10
    headers = {"Authorization": f"Bearer {account.api_key}"}
    while True:
        records: list[dict[str, Any]] = httpx.get(f"{base_url}/v1/usage", headers=headers).json()[
            "data"
        ]
        if len(records) >= count or time.monotonic() > deadline:
            return records
        time.sleep(0.2)


# -- text -------------------------------------------------------------------------------------


@pytest.mark.parametrize("model", ["deepseek-v4-flash", "claude-sonnet-4-6", "gemini-3.5-flash"])
def test_complete(text: text_pb2_grpc.TextStub, account: Account, model: str) -> None:
    reply: text_pb2.TextCompletion = text.Complete(
        text_pb2.TextRequest(model=model, messages=[HAIKU], max_tokens=128),
        metadata=key(account),
        timeout=TIMEOUT,
    )
    assert reply.id.startswith("chatcmpl-") and reply.model == model
    (choice,) = reply.choices
    assert choice.message.role == text_pb2.ROLE_ASSISTANT and choice.message.text
    assert choice.finish_reason == text_pb2.FINISH_REASON_STOP
    assert reply.usage.prompt_tokens > 0 and reply.usage.completion_tokens > 0
    assert reply.cost_micros > 0 and Decimal(reply.cost_idr) * 1_000_000 == reply.cost_micros


def test_logprobs_when_asked_for(text: text_pb2_grpc.TextStub, account: Account) -> None:
    reply: text_pb2.TextCompletion = text.Complete(
        text_pb2.TextRequest(
            model="deepseek-v4-flash",
            messages=[HAIKU],
            max_tokens=64,
            logprobs=True,
            top_logprobs=1,
        ),
        metadata=key(account),
        timeout=TIMEOUT,
    )
    (choice,) = reply.choices
    tokens = json.loads(choice.logprobs_json)["content"]
    assert "".join(t["token"] for t in tokens) == choice.message.text
    assert all(len(t["top_logprobs"]) == 1 for t in tokens)
    plain: text_pb2.TextCompletion = text.Complete(
        text_pb2.TextRequest(model="deepseek-v4-flash", messages=[HAIKU], max_tokens=64),
        metadata=key(account),
        timeout=TIMEOUT,
    )
    assert plain.choices[0].logprobs_json == ""


@pytest.mark.parametrize("model", ["deepseek-v4-flash", "claude-haiku-4-5", "gpt-5.4-mini"])
def test_stream(text: text_pb2_grpc.TextStub, account: Account, model: str) -> None:
    chunks = list(
        text.Stream(
            text_pb2.TextRequest(model=model, messages=[HAIKU], max_tokens=128),
            metadata=key(account),
            timeout=TIMEOUT,
        )
    )
    *pieces, last = chunks
    assert "".join(c.text for p in pieces for c in p.choices)
    assert {p.id for p in pieces} == {last.id} and last.model == model
    finishes = [c.finish_reason for p in pieces for c in p.choices if c.finish_reason]
    assert finishes == [text_pb2.FINISH_REASON_STOP]
    # The last message: usage and what was charged, no choices.
    assert not last.choices and last.usage.completion_tokens > 0 and last.cost_micros > 0


def test_a_tool_round_trip(
    text: text_pb2_grpc.TextStub, account: Account, sandbox: httpx.Client
) -> None:
    question = text_pb2.Message(role=USER, text="What is the weather in Jakarta?")
    first: text_pb2.TextCompletion = text.Complete(
        text_pb2.TextRequest(model="deepseek-v4-flash", messages=[question], tools=[WEATHER]),
        metadata=key(account),
        timeout=TIMEOUT,
    )
    (choice,) = first.choices
    assert choice.finish_reason == text_pb2.FINISH_REASON_TOOL_CALLS
    (call,) = choice.message.tool_calls
    assert call.function.name == "get_weather" and json.loads(call.function.arguments)["city"]
    sandbox.delete("/_sandbox/requests")
    second: text_pb2.TextCompletion = text.Complete(
        text_pb2.TextRequest(
            model="deepseek-v4-flash",
            tools=[WEATHER],
            messages=[
                question,
                choice.message,  # the reply goes back as it came
                text_pb2.Message(role=text_pb2.ROLE_TOOL, tool_call_id=call.id, text="31C"),
            ],
        ),
        metadata=key(account),
        timeout=TIMEOUT,
    )
    assert second.choices[0].finish_reason == text_pb2.FINISH_REASON_STOP
    assert second.choices[0].message.text
    seen = sandbox.get("/_sandbox/requests").json()[-1]
    sent = (seen["body"] if "body" in seen else seen)["messages"]
    assert sent[1]["tool_calls"][0]["id"] == call.id
    assert sent[2] == {"role": "tool", "tool_call_id": call.id, "content": "31C"}


def test_a_streamed_tool_call(text: text_pb2_grpc.TextStub, account: Account) -> None:
    chunks = list(
        text.Stream(
            text_pb2.TextRequest(
                model="deepseek-v4-flash",
                messages=[text_pb2.Message(role=USER, text="Weather in Bandung?")],
                tools=[WEATHER],
                tool_choice=text_pb2.ToolChoice(function_name="get_weather"),
            ),
            metadata=key(account),
            timeout=TIMEOUT,
        )
    )
    pieces = [t for c in chunks for choice in c.choices for t in choice.tool_calls]
    assert pieces[0].id and pieces[0].function.name == "get_weather"
    arguments = "".join(p.function.arguments for p in pieces)
    assert json.loads(arguments)["city"]


def test_money_moves_as_for_a_chat_completion(
    text: text_pb2_grpc.TextStub,
    new_account: NewAccount,
    billing: billing_pb2_grpc.BillingStub,
    base_url: str,
) -> None:
    prompt = "hello [sim:tokens=7]"
    typed, chat, streamed = new_account("100000"), new_account("100000"), new_account("100000")
    start = balance_micros(billing, typed.account_id)
    reply: text_pb2.TextCompletion = text.Complete(
        text_pb2.TextRequest(
            model="kimi-k2.6", messages=[text_pb2.Message(role=USER, text=prompt)], max_tokens=128
        ),
        metadata=key(typed),
        timeout=TIMEOUT,
    )
    spent = start - balance_micros(billing, typed.account_id)
    assert spent == reply.cost_micros > 0
    assert reply.usage.completion_tokens == 7

    # The same call as a chat completion costs the same.
    client = openai.OpenAI(base_url=f"{base_url}/v1", api_key=chat.api_key, max_retries=0)
    before = balance_micros(billing, chat.account_id)
    client.chat.completions.create(
        model="kimi-k2.6", messages=[{"role": "user", "content": prompt}], max_tokens=128
    )
    assert before - balance_micros(billing, chat.account_id) == spent

    before = balance_micros(billing, streamed.account_id)
    *_, last = text.Stream(
        text_pb2.TextRequest(
            model="kimi-k2.6", messages=[text_pb2.Message(role=USER, text=prompt)], max_tokens=128
        ),
        metadata=key(streamed),
        timeout=TIMEOUT,
    )
    assert before - balance_micros(billing, streamed.account_id) == last.cost_micros > 0

    (record,) = usage_records(base_url, typed, 1)
    assert (record["endpoint"], record["model"], record["status"]) == (
        "grpc.text",
        "kimi-k2.6",
        "succeeded",
    )
    assert Decimal(record["cost_idr"]) == Decimal(reply.cost_idr)
    assert record["output_tokens"] == 7


@pytest.mark.parametrize(
    ("request_", "field"),
    [
        (text_pb2.TextRequest(), "messages"),
        (text_pb2.TextRequest(messages=[text_pb2.Message(text="hi")]), "messages[0].role"),
        (text_pb2.TextRequest(messages=[HAIKU], temperature=3), "temperature"),
        (
            text_pb2.TextRequest(
                messages=[HAIKU],
                tools=[text_pb2.Tool(function=text_pb2.FunctionTool(name="no spaces"))],
            ),
            "tools[0].function.name",
        ),
    ],
)
def test_bad_input_is_invalid_argument_naming_the_field(
    text: text_pb2_grpc.TextStub,
    account: Account,
    billing: billing_pb2_grpc.BillingStub,
    request_: text_pb2.TextRequest,
    field: str,
) -> None:
    start = balance_micros(billing, account.account_id)
    for call in (text.Complete, text.Stream):
        with pytest.raises(grpc.RpcError) as refused:
            result = call(request_, metadata=key(account), timeout=TIMEOUT)
            list(result) if call is text.Stream else None
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert field in details(refused.value)
        assert field_of(refused.value) == field
    assert balance_micros(billing, account.account_id) == start


def test_an_unknown_model_is_not_found(text: text_pb2_grpc.TextStub, account: Account) -> None:
    with pytest.raises(grpc.RpcError) as refused:
        text.Complete(
            text_pb2.TextRequest(model="no-such-model", messages=[HAIKU]),
            metadata=key(account),
            timeout=TIMEOUT,
        )
    assert refused.value.code() == grpc.StatusCode.NOT_FOUND
    assert "no-such-model" in details(refused.value)


def test_no_key_or_a_bad_key_is_unauthenticated(
    text: text_pb2_grpc.TextStub,
    media: media_pb2_grpc.MediaStub,
    jobs: jobs_pb2_grpc.JobsStub,
) -> None:
    calls: list[Any] = [
        lambda md: text.Complete(text_pb2.TextRequest(messages=[HAIKU]), metadata=md),
        lambda md: list(text.Stream(text_pb2.TextRequest(messages=[HAIKU]), metadata=md)),
        lambda md: media.CreateImageJob(media_pb2.ImageJobRequest(prompt="x"), metadata=md),
        lambda md: jobs.GetJob(jobs_pb2.GetJobRequest(job_id="job_x"), metadata=md),
    ]
    for metadata in ((), (("authorization", "Bearer aip_live_nope"),), (("authorization", "x"),)):
        for call in calls:
            with pytest.raises(grpc.RpcError) as refused:
                call(metadata)
            assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
            assert details(refused.value) == "Missing or invalid API key."


def test_an_empty_balance_is_resource_exhausted(
    text: text_pb2_grpc.TextStub, media: media_pb2_grpc.MediaStub, new_account: NewAccount
) -> None:
    broke = new_account("0")
    with pytest.raises(grpc.RpcError) as text_refused:
        text.Complete(text_pb2.TextRequest(messages=[HAIKU]), metadata=key(broke), timeout=30)
    with pytest.raises(grpc.RpcError) as job_refused:
        media.CreateImageJob(
            media_pb2.ImageJobRequest(prompt="Sunset"), metadata=key(broke), timeout=30
        )
    for refused in (text_refused, job_refused):
        assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "balance" in details(refused.value)


def test_a_stream_that_breaks_after_output_ends_with_a_status(
    text: text_pb2_grpc.TextStub, account: Account
) -> None:
    received = []
    with pytest.raises(grpc.RpcError) as broke:
        for chunk in text.Stream(
            text_pb2.TextRequest(
                messages=[text_pb2.Message(role=USER, text="hello [sim:fail-after=3]")],
                max_tokens=256,
            ),
            metadata=key(account),
            timeout=TIMEOUT,
        ):
            received.append(chunk)
    assert received  # output came first
    assert broke.value.code() == grpc.StatusCode.UNAVAILABLE
    assert details(broke.value) and "Traceback" not in details(broke.value)


def test_a_caller_leaving_mid_stream_is_charged_what_the_upstream_produced(
    text: text_pb2_grpc.TextStub, account: Account, billing: billing_pb2_grpc.BillingStub
) -> None:
    prompt = f"leave mid-stream {time.monotonic_ns()} [sim:chunk-delay=0.2][sim:tokens=12]"
    request = text_pb2.TextRequest(
        model="gpt-5.4-mini", messages=[text_pb2.Message(role=USER, text=prompt)]
    )
    stream = text.Stream(request, metadata=key(account), timeout=TIMEOUT)
    next(stream)
    stream.cancel()  # one chunk, then the caller leaves: the upstream call goes on
    *_, last = text.Stream(request, metadata=key(account), timeout=TIMEOUT)
    deadline = time.monotonic() + 20
    while True:
        balance = billing.GetAccountBalance(
            billing_pb2.GetAccountBalanceRequest(account_id=account.account_id)
        )
        if balance.held_micros == 0 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    page = billing.ListLedger(
        billing_pb2.ListLedgerRequest(account_id=account.account_id, limit=100)
    )
    charged = sorted(-e.amount_micros for e in page.entries if e.kind == "capture")
    assert charged == [last.cost_micros, last.cost_micros]


# -- media ------------------------------------------------------------------------------------


def test_an_image_job_created_typed_and_polled_to_done(
    media: media_pb2_grpc.MediaStub,
    jobs: jobs_pb2_grpc.JobsStub,
    new_account: NewAccount,
    billing: billing_pb2_grpc.BillingStub,
    base_url: str,
) -> None:
    account = new_account("100000")
    start = balance_micros(billing, account.account_id)
    accepted = media.CreateImageJob(
        media_pb2.ImageJobRequest(
            model="gpt-image-2", prompt="Sunset over Mount Bromo", resolution="2k"
        ),
        metadata=key(account),
        timeout=TIMEOUT,
    )
    assert accepted.status == "pending" and accepted.job_id
    deadline = time.monotonic() + 30
    while True:
        job: jobs_pb2.Job = jobs.GetJob(
            jobs_pb2.GetJobRequest(job_id=accepted.job_id), metadata=key(account), timeout=10
        )
        if job.status in ("done", "failed") or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert job.status == "done", job
    assert job.result_url.string_value.startswith(base_url)
    assert httpx.get(job.result_url.string_value).status_code == 200
    assert job.actual_cost_idr.string_value == accepted.estimated_cost_idr
    spent = start - balance_micros(billing, account.account_id)
    assert Decimal(accepted.estimated_cost_idr) * 1_000_000 == spent
    (record,) = usage_records(base_url, account, 1)
    assert (record["endpoint"], record["model"]) == ("grpc.image.generate", "gpt-image-2")

    # Another account's job is not found, as over REST.
    with pytest.raises(grpc.RpcError) as other:
        jobs.GetJob(
            jobs_pb2.GetJobRequest(job_id=accepted.job_id),
            metadata=key(new_account("1")),
            timeout=10,
        )
    assert other.value.code() == grpc.StatusCode.NOT_FOUND


def test_bad_job_input_names_the_field(media: media_pb2_grpc.MediaStub, account: Account) -> None:
    calls: list[tuple[Any, str]] = [
        (
            lambda: media.CreateImageJob(media_pb2.ImageJobRequest(), metadata=key(account)),
            "prompt",
        ),
        (
            lambda: media.CreateImg2ImgJob(
                media_pb2.Img2ImgJobRequest(prompt="p"), metadata=key(account)
            ),
            "images",
        ),
        (
            lambda: media.CreateVideoJob(
                media_pb2.VideoJobRequest(prompt="p", options=media_pb2.VideoOptions(duration=99)),
                metadata=key(account),
            ),
            "duration",
        ),
        (
            lambda: media.CreateImg2VideoJob(
                media_pb2.Img2VideoJobRequest(prompt="p"), metadata=key(account)
            ),
            "first_frame_url",
        ),
    ]
    for call, field in calls:
        with pytest.raises(grpc.RpcError) as refused:
            call()
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert field_of(refused.value) == field and field in details(refused.value)


def test_the_readme_example_runs(
    stack: Stack, account: Account, capsys: pytest.CaptureFixture[str]
) -> None:
    readme = (PROJECT_ROOT / "README.md").read_text()
    section = readme.split("### Internal callers: typed gRPC", 1)[1]
    example = section.split("```python\n", 1)[1].split("```", 1)[0]
    example = example.replace("127.0.0.1:50050", stack.config.dial_addr("gateway"))
    example = example.replace("aip_live_...", account.api_key)
    exec(compile(example, "README.md", "exec"), {})
    printed = capsys.readouterr().out
    assert len(printed.strip()) > 20


# -- reflection and the edge ------------------------------------------------------------------


def test_reflection_lists_and_describes_the_services(
    gateway: grpc.Channel, account: Account
) -> None:
    """What grpcurl does: list, describe, then call with JSON, knowing no proto."""
    database = ProtoReflectionDescriptorDatabase(gateway)
    services = set(database.get_services())
    assert {"aiport.v1.Text", "aiport.v1.Media", "aiport.v1.Jobs", "aiport.v1.Chat"} <= services
    pool = descriptor_pool.DescriptorPool(database)
    method = pool.FindServiceByName("aiport.v1.Text").FindMethodByName("Complete")
    request_class = message_factory.GetMessageClass(method.input_type)
    reply_class = message_factory.GetMessageClass(method.output_type)
    # The README's grpcurl line's JSON.
    request = json_format.Parse(
        '{"model": "deepseek-v4-flash", "messages": [{"role": "ROLE_USER", "text": "Hello"}]}',
        request_class(),
    )
    complete = gateway.unary_unary(
        "/aiport.v1.Text/Complete",
        request_serializer=lambda m: m.SerializeToString(),
        response_deserializer=reply_class.FromString,
    )
    reply = json_format.MessageToDict(complete(request, metadata=key(account), timeout=TIMEOUT))
    assert reply["choices"][0]["message"]["text"] and int(reply["costMicros"]) > 0


@pytest.mark.parametrize(
    "path",
    [
        "/aiport.v1.Text/Complete",
        "/aiport.v1.Text/Stream",
        "/aiport.v1.Media/CreateImageJob",
        "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
    ],
)
def test_the_edge_never_routes_typed_grpc(stack: Stack, account: Account, path: str) -> None:
    request_id = str(uuid.uuid4())
    edge = f"{stack.config.edge_host}:{stack.config.edge_port}"
    with grpc.insecure_channel(edge) as channel:
        call = channel.unary_unary(
            path,
            request_serializer=text_pb2.TextRequest.SerializeToString,
            response_deserializer=text_pb2.TextCompletion.FromString,
        )
        with pytest.raises(grpc.RpcError) as refused:
            call(
                text_pb2.TextRequest(messages=[HAIKU]),
                metadata=(*key(account), ("x-request-id", request_id)),
                timeout=10,
            )
    assert refused.value.code() == grpc.StatusCode.UNIMPLEMENTED  # the edge's 404
    time.sleep(1.0)
    for name, process in stack.processes.items():
        if name.startswith("gateway"):
            assert request_id not in process.log_path.read_text(errors="replace")
