"""Async image and video jobs through the edge: submit, poll, download, money."""

from __future__ import annotations

import asyncio
import io
import re
import struct
import time
import zlib
from typing import Any

import aio_pika
import grpc
import httpx
import psycopg
import pytest
from aiport.v1 import billing_pb2, billing_pb2_grpc, job_state_pb2, job_state_pb2_grpc
from PIL import Image

from deploy.local.stack import Stack, replica_name
from services.common import broker, service_auth
from services.common.blobs import LocalBlobStore, new_key
from services.common.job_ids import new_job_id
from services.common.job_states import JobStatus, Modality
from tests.integration.conftest import (
    JOB_LEASE_SECONDS,
    JOB_TIMEOUT_SECONDS,
    Account,
    NewAccount,
)

TERMINAL = ("done", "failed")


def poll(http: httpx.Client, job_id: str, seconds: float = 30) -> dict[str, Any]:
    deadline = time.monotonic() + seconds
    while True:
        response = http.get(f"/v1/jobs/{job_id}")
        assert response.status_code == 200, response.text
        job: dict[str, Any] = response.json()
        if job["status"] in TERMINAL or time.monotonic() > deadline:
            return job
        time.sleep(0.2)


def submit(http: httpx.Client, path: str, body: dict[str, Any]) -> dict[str, Any]:
    response = http.post(path, json=body)
    assert response.status_code == 202, response.text
    accepted: dict[str, Any] = response.json()
    assert accepted["status"] == "pending"
    assert accepted["job_id"].startswith("job_")
    return accepted


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def upload(http: httpx.Client, data: bytes, name: str = "ref.png") -> dict[str, Any]:
    response = http.post("/v1/image/upload", files={"file": (name, data, "image/png")})
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def a_png(http: httpx.Client) -> bytes:
    """A real PNG made by the stack itself (a finished 1:1 image job)."""
    job = poll(
        http, submit(http, "/v1/image/generate", {"prompt": "ref", "aspect_ratio": "1:1"})["job_id"]
    )
    return httpx.get(job["result_url"]).content


def state(billing: billing_pb2_grpc.BillingStub, account_id: str) -> tuple[int, int]:
    reply = billing.GetAccountBalance(billing_pb2.GetAccountBalanceRequest(account_id=account_id))
    return int(reply.balance_micros), int(reply.held_micros)


def settled_state(
    billing: billing_pb2_grpc.BillingStub, account_id: str, expected: tuple[int, int]
) -> tuple[int, int]:
    """The account once the jobs service has settled with billing, which it does
    just after a job is marked finished (two services: not one transaction)."""
    deadline = time.monotonic() + 5
    current = state(billing, account_id)
    while current != expected and time.monotonic() < deadline:
        time.sleep(0.05)
        current = state(billing, account_id)
    return current


def test_image_job_end_to_end(
    http: httpx.Client, account: Account, billing: billing_pb2_grpc.BillingStub
) -> None:
    accepted = submit(
        http,
        "/v1/image/generate",
        {"prompt": "Sunset over Mount Bromo", "resolution": "2k", "aspect_ratio": "16:9"},
    )
    assert accepted["estimated_cost_idr"] == "1400"
    job = poll(http, accepted["job_id"])
    assert job["status"] == "done", job
    assert job["error_message"] is None
    assert job["actual_cost_idr"] == "1400"
    assert job["created_at"].endswith("Z")
    image = httpx.get(job["result_url"])
    assert image.status_code == 200
    assert image.headers["content-type"] == "image/png"
    width, height = png_size(image.content)
    assert width * 9 == pytest.approx(height * 16, abs=16)
    expected = (100_000_000_000 - 1_400_000_000, 0)
    assert settled_state(billing, account.account_id, expected) == expected


def test_pending_job_shape_has_nulls(http: httpx.Client) -> None:
    accepted = submit(http, "/v1/video/generate", {"prompt": "slow [sim:delay=2]", "duration": 4})
    job = http.get(f"/v1/jobs/{accepted['job_id']}").json()
    assert job["status"] in ("pending", "processing")
    assert job["result_url"] is None and job["error_message"] is None
    assert job["actual_cost_idr"] is None
    assert poll(http, accepted["job_id"])["status"] == "done"


def test_video_job_is_a_playable_mp4_billed_per_second(
    http: httpx.Client, account: Account, billing: billing_pb2_grpc.BillingStub
) -> None:
    accepted = submit(
        http,
        "/v1/video/generate",
        {
            "prompt": "A drone shot over rice terraces",
            "resolution": "720p",
            "duration": 6,
            "ratio": "16:9",
            "return_last_frame": True,
        },
    )
    assert accepted["estimated_cost_idr"] == "13800"  # 6 s x 2300 IDR
    job = poll(http, accepted["job_id"])
    assert job["status"] == "done", job
    video = httpx.get(job["result_url"])
    assert video.headers["content-type"] == "video/mp4"
    assert video.content[4:8] == b"ftyp"
    frame = httpx.get(job["last_frame_url"])
    assert frame.headers["content-type"] == "image/png"
    expected = (100_000_000_000 - 13_800_000_000, 0)
    assert settled_state(billing, account.account_id, expected) == expected


def test_img2img_with_an_upload(http: httpx.Client) -> None:
    uploaded = upload(http, a_png(http))
    assert uploaded["upload_id"].startswith("upl_")
    assert uploaded["content_type"] == "image/png"
    job = poll(
        http,
        submit(http, "/v1/image/img2img", {"prompt": "Studio Ghibli", "images": [uploaded["url"]]})[
            "job_id"
        ],
    )
    assert job["status"] == "done", job
    assert httpx.get(job["result_url"]).content[:4] == b"\x89PNG"


def test_img2video_and_multimodal_with_uploads(http: httpx.Client) -> None:
    url = upload(http, a_png(http))["url"]
    job = poll(
        http,
        submit(
            http,
            "/v1/video/img2video",
            {"prompt": "push in", "first_frame_url": url, "last_frame_url": url, "duration": 4},
        )["job_id"],
    )
    assert job["status"] == "done", job
    # With a reference asset: the with-reference rate and the 5-second floor.
    accepted = submit(
        http,
        "/v1/video/multimodal",
        {"prompt": "subject walks", "images": [url], "resolution": "720p", "duration": 4},
    )
    assert accepted["estimated_cost_idr"] == "14000"  # max(4, 5) s x 2800 IDR
    job = poll(http, accepted["job_id"])
    assert job["status"] == "done", job
    assert job["actual_cost_idr"] == "14000"


@pytest.mark.parametrize(
    ("path", "body", "param"),
    [
        ("/v1/image/generate", {}, "prompt"),
        ("/v1/image/generate", {"prompt": "x", "aspect_ratio": "7:5"}, "aspect_ratio"),
        ("/v1/image/generate", {"prompt": "x", "resolution": "8k"}, "resolution"),
        ("/v1/image/img2img", {"prompt": "x"}, "images"),
        ("/v1/image/img2img", {"prompt": "x", "images": ["http://example.com/a.png"]}, "images[0]"),
        ("/v1/video/generate", {"prompt": "x", "duration": 16}, "duration"),
        ("/v1/video/generate", {"prompt": "x", "resolution": "360p"}, "resolution"),
        ("/v1/video/generate", {"prompt": "x", "ratio": "5:4"}, "ratio"),
        ("/v1/video/img2video", {"prompt": "x"}, "first_frame_url"),
        ("/v1/video/multimodal", {"prompt": "x", "videos": ["https://a.b/v.mp4"] * 4}, "videos"),
    ],
)
def test_invalid_fields_are_named(
    http: httpx.Client, path: str, body: dict[str, Any], param: str
) -> None:
    response = http.post(path, json=body)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["param"] == param
    assert param.split("[")[0] in error["message"]


def test_unknown_model_is_404(http: httpx.Client) -> None:
    response = http.post("/v1/image/generate", json={"prompt": "x", "model": "seedance-2.0-fast"})
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "MODEL_NOT_FOUND"


def test_empty_balance_is_402(base_url: str, new_account: NewAccount) -> None:
    poor = new_account("100")
    response = httpx.post(
        f"{base_url}/v1/video/generate",
        json={"prompt": "x", "duration": 15, "resolution": "720p"},
        headers={"Authorization": f"Bearer {poor.api_key}"},
    )
    assert response.status_code == 402
    assert response.json()["error"]["code"] == "insufficient_balance"


def test_another_accounts_job_is_404(
    http: httpx.Client, base_url: str, new_account: NewAccount
) -> None:
    job_id = submit(http, "/v1/image/generate", {"prompt": "mine"})["job_id"]
    other = new_account("1000")
    theirs = httpx.get(
        f"{base_url}/v1/jobs/{job_id}", headers={"Authorization": f"Bearer {other.api_key}"}
    )
    missing = http.get("/v1/jobs/job_doesnotexist0000000000000")
    assert theirs.status_code == missing.status_code == 404
    assert theirs.json() == missing.json()
    poll(http, job_id)


def test_upload_type_is_sniffed_not_trusted(http: httpx.Client) -> None:
    png = a_png(http)
    # Named and labelled JPEG, but the bytes are PNG.
    sniffed = http.post("/v1/image/upload", files={"file": ("a.jpg", png, "image/jpeg")})
    assert sniffed.json()["content_type"] == "image/png"
    fake = http.post("/v1/image/upload", files={"file": ("a.png", b"<html>hi</html>", "image/png")})
    assert fake.status_code == 400
    assert fake.json()["error"]["param"] == "file"
    missing = http.post("/v1/image/upload", files={"other": ("a.png", png, "image/png")})
    assert missing.status_code == 400


def test_upload_over_30_mib_is_413(http: httpx.Client) -> None:
    header = b"\x89PNG\r\n\x1a\n"
    just_over = header + bytes(30 * 1024 * 1024 + 1 - len(header))
    response = http.post("/v1/image/upload", files={"file": ("big.png", just_over, "image/png")})
    assert response.status_code == 413
    assert response.json()["error"]["param"] == "file"
    # Far over: refused by the edge before it reaches a service, same shape.
    huge = header + bytes(40 * 1024 * 1024)
    response = http.post("/v1/image/upload", files={"file": ("huge.png", huge, "image/png")})
    assert response.status_code == 413
    assert set(response.json()["error"]) == {"message", "type", "param", "code"}


def test_failing_upstream_refunds_in_full(
    http: httpx.Client, account: Account, billing: billing_pb2_grpc.BillingStub
) -> None:
    before = state(billing, account.account_id)
    failing: list[tuple[str, dict[str, Any]]] = [
        ("/v1/image/generate", {"prompt": "x [sim:fail]"}),
        ("/v1/video/generate", {"prompt": "x [sim:fail]", "duration": 4}),
    ]
    for path, body in failing:
        job = poll(http, submit(http, path, body)["job_id"])
        assert job["status"] == "failed"
        assert job["error_message"] == "Provider failed. Please try again."
        assert job["error_code"] == "provider_error"
        assert job["actual_cost_idr"] == "0"
    assert settled_state(billing, account.account_id, before) == before


def test_hung_job_times_out_and_is_refunded(
    http: httpx.Client, account: Account, billing: billing_pb2_grpc.BillingStub
) -> None:
    before = state(billing, account.account_id)
    job_id = submit(http, "/v1/video/generate", {"prompt": "x [sim:hang]", "duration": 4})["job_id"]
    job = poll(http, job_id, seconds=JOB_TIMEOUT_SECONDS + 10)
    assert job["status"] == "failed"
    assert job["error_message"] == f"Job timed out after {JOB_TIMEOUT_SECONDS} seconds."
    assert job["error_code"] == "timeout"
    assert settled_state(billing, account.account_id, before) == before


def test_worker_killed_mid_job_finishes_it_once(
    stack: Stack,
    http: httpx.Client,
    sandbox: httpx.Client,
    account: Account,
    billing: billing_pb2_grpc.BillingStub,
) -> None:
    prompt = f"kill test {time.monotonic_ns()} [sim:delay=4]"
    job_id = submit(http, "/v1/video/generate", {"prompt": prompt, "duration": 4})["job_id"]

    def tasks() -> list[dict[str, Any]]:
        return [t for t in sandbox.get("/_sandbox/tasks").json() if t["prompt"] == prompt]

    deadline = time.monotonic() + 10
    while not tasks() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(tasks()) == 1
    time.sleep(0.3)  # let the worker record the upstream task before the kill
    # SIGKILL every video worker (with replicas, whichever runs the job): no
    # goodbye, the message stays unacked and the job's lease lapses.
    workers = [replica_name("worker-video", i) for i in range(1, stack.config.replicas + 1)]
    for worker in workers:
        stack.kill(worker)
    for worker in workers:
        stack.start_service(worker)
    job = poll(http, job_id)
    assert job["status"] == "done", job
    # The restarted worker resumed the recorded task: no second upstream task,
    # one charge.
    assert len(tasks()) == 1
    expected = (100_000_000_000 - 4 * 2_300_000_000, 0)
    assert settled_state(billing, account.account_id, expected) == expected
    page = billing.ListLedger(billing_pb2.ListLedgerRequest(account_id=account.account_id))
    assert [e.kind for e in page.entries].count("capture") == 1
    # Resumed once: the redelivery waited for the dead worker's lease, then ran.
    assert job_row(stack, job_id)["attempts"] == 2


@pytest.mark.parametrize(
    "url",
    [
        "https://127.0.0.1/secret.png",
        "https://localhost:8443/a.png",
        "https://169.254.169.254/latest/meta-data/iam.png",
        "https://10.0.0.7/internal.png",
    ],
)
def test_private_reference_urls_are_refused_and_refunded(
    http: httpx.Client, account: Account, billing: billing_pb2_grpc.BillingStub, url: str
) -> None:
    before = state(billing, account.account_id)
    job = poll(http, submit(http, "/v1/image/img2img", {"prompt": "x", "images": [url]})["job_id"])
    assert job["status"] == "failed"
    assert "refused" in job["error_message"]
    assert settled_state(billing, account.account_id, before) == before


# -- issue 11: upload ids, own results as references; uploads decoded --------------------


def test_img2img_with_an_upload_id(http: httpx.Client) -> None:
    uploaded = upload(http, a_png(http))
    job = poll(
        http,
        submit(http, "/v1/image/img2img", {"prompt": "Ghibli", "images": [uploaded["upload_id"]]})[
            "job_id"
        ],
    )
    assert job["status"] == "done", job
    # The same id as an img2video first frame.
    accepted = submit(
        http,
        "/v1/video/img2video",
        {"prompt": "push in", "first_frame_url": uploaded["upload_id"], "duration": 4},
    )
    assert poll(http, accepted["job_id"])["status"] == "done"


def test_img2img_with_a_result_url_of_an_own_job(http: httpx.Client) -> None:
    first = poll(http, submit(http, "/v1/image/generate", {"prompt": "a cat"})["job_id"])
    assert first["status"] == "done", first
    edited = poll(
        http,
        submit(http, "/v1/image/img2img", {"prompt": "add a hat", "images": [first["result_url"]]})[
            "job_id"
        ],
    )
    assert edited["status"] == "done", edited
    assert httpx.get(edited["result_url"]).content[:4] == b"\x89PNG"


def test_another_accounts_upload_and_result_are_refused_and_nothing_held(
    http: httpx.Client,
    base_url: str,
    new_account: NewAccount,
    billing: billing_pb2_grpc.BillingStub,
) -> None:
    uploaded = upload(http, a_png(http))
    result = poll(http, submit(http, "/v1/image/generate", {"prompt": "mine"})["job_id"])
    assert result["status"] == "done", result
    stranger = new_account("100000")
    before = state(billing, stranger.account_id)
    refusals = []
    with httpx.Client(
        base_url=base_url, headers={"Authorization": f"Bearer {stranger.api_key}"}, timeout=30
    ) as theirs:
        for path, body, param in [
            ("/v1/image/img2img", {"images": [uploaded["upload_id"]]}, "images[0]"),
            ("/v1/image/img2img", {"images": [uploaded["url"]]}, "images[0]"),
            ("/v1/image/img2img", {"images": [result["result_url"]]}, "images[0]"),
            ("/v1/video/img2video", {"first_frame_url": result["result_url"]}, "first_frame_url"),
            ("/v1/video/multimodal", {"images": [uploaded["upload_id"]]}, "images[0]"),
            # Unknown ids answer exactly the same.
            ("/v1/image/img2img", {"images": ["upl_" + "A" * 32]}, "images[0]"),
        ]:
            response = theirs.post(path, json={"prompt": "steal", **body})
            assert response.status_code == 400, response.text
            error = response.json()["error"]
            assert (error["code"], error["param"]) == ("reference_not_found", param)
            refusals.append(error["message"].replace(param, "<param>"))
    assert len(set(refusals)) == 1
    assert state(billing, stranger.account_id) == before  # nothing held, nothing charged


def animated_png() -> bytes:
    """Two 8x8 frames: an APNG (acTL declares 2 frames)."""
    out = io.BytesIO()
    frames = [Image.new("RGB", (8, 8), color) for color in ("red", "blue")]
    frames[0].save(out, "PNG", save_all=True, append_images=frames[1:])
    return out.getvalue()


def bomb_png(width: int, height: int) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data)
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 1_000_000, 9)
    header = b"\x89PNG\r\n\x1a\n"
    return header + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (
            b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 8,
            "The PNG image could not be decoded (it is corrupt or truncated).",
        ),
        (bomb_png(20_000, 20_000), "pixels are accepted."),
        (bomb_png(8_000, 8_000), "The image is 8000×8000 pixels; at most 50000000 pixels"),
        (animated_png(), "The image has 2 frames (animated or multi-picture)"),
    ],
    ids=["garbage-after-png-signature", "bomb-20000", "bomb-8000", "animated-png"],
)
def test_uploads_that_do_not_decode_as_one_still_image_are_400(
    http: httpx.Client, data: bytes, message: str
) -> None:
    response = http.post("/v1/image/upload", files={"file": ("x.png", data, "image/png")})
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert (error["code"], error["param"]) == ("invalid_image", "file")
    assert message in error["message"]


def test_a_stored_reference_that_does_not_decode_fails_the_job_and_refunds(
    stack: Stack, http: httpx.Client, account: Account, billing: billing_pb2_grpc.BillingStub
) -> None:
    """The worker decodes every image reference too (a file stored before uploads
    were verified, or a fetched URL): it never reaches the upstream."""
    store = LocalBlobStore(stack.config.blob_dir or stack.config.run_dir / "blobs")
    key = new_key("uploads", "image.png")
    garbage = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 8

    async def put() -> None:
        await store.record_owner(key, account.account_id)
        await store.put_bytes(key, garbage)

    asyncio.run(put())
    before = state(billing, account.account_id)
    upload_id = "upl_" + key.split("/")[1]
    job = poll(
        http, submit(http, "/v1/image/img2img", {"prompt": "x", "images": [upload_id]})["job_id"]
    )
    assert job["status"] == "failed", job
    assert job["error_message"] == (
        "Reference image refused: The PNG image could not be decoded (it is corrupt or truncated)."
    )
    assert settled_state(billing, account.account_id, before) == before


# -- issue 12: exactly-once upstream work, unknown creations, refused captures ---------


def job_row(stack: Stack, job_id: str) -> dict[str, Any]:
    """The job's row in the jobs service's own schema (what it decided, not shown)."""
    url = stack.config.database_url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(url) as conn, conn.cursor(row_factory=psycopg.rows.dict_row) as cur:
        row = cur.execute("SELECT * FROM jobs.jobs WHERE id = %s", (job_id,)).fetchone()
    assert row is not None
    return row


def deliver_again(stack: Stack, job_id: str, kind: str) -> None:
    """A second delivery of the job's work message, as the outbox relay sends one
    when a publisher confirm was slow."""

    async def publish() -> None:
        connection = await aio_pika.connect(stack.config.amqp_url)
        async with connection:
            channel = await connection.channel(publisher_confirms=True)
            names = broker.Names(stack.config.amqp_prefix)
            exchange = await channel.get_exchange(names.work_exchange)
            body = job_state_pb2.WorkItem(job_id=job_id).SerializeToString()
            await exchange.publish(broker.message(body, job_id), routing_key=kind)

    asyncio.run(publish())


def wait_until(predicate: Any, seconds: float = 10) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def captures(billing: billing_pb2_grpc.BillingStub, account_id: str) -> int:
    page = billing.ListLedger(billing_pb2.ListLedgerRequest(account_id=account_id))
    return [e.kind for e in page.entries].count("capture")


def test_a_second_delivery_of_a_running_image_job_is_deferred_not_paid_twice(
    stack: Stack,
    http: httpx.Client,
    sandbox: httpx.Client,
    account: Account,
    billing: billing_pb2_grpc.BillingStub,
) -> None:
    prompt = f"twice {time.monotonic_ns()} [sim:delay=3]"

    def upstream_calls() -> int:
        seen = sandbox.get("/_sandbox/requests").json()
        return sum(
            1 for e in seen if isinstance(e["body"], dict) and e["body"].get("prompt") == prompt
        )

    job_id = submit(http, "/v1/image/generate", {"prompt": prompt})["job_id"]
    wait_until(lambda: upstream_calls() == 1)  # the first worker is in the upstream call
    deliver_again(stack, job_id, "image")
    job = poll(http, job_id)
    assert job["status"] == "done", job
    # The second delivery waited out the lease, came back, found the job done.
    time.sleep(JOB_LEASE_SECONDS + 2)
    assert upstream_calls() == 1
    assert job_row(stack, job_id)["attempts"] == 1  # deferring is not an attempt
    assert captures(billing, account.account_id) == 1
    cost = 100_000_000_000 - int(job["actual_cost_idr"]) * 1_000_000
    assert settled_state(billing, account.account_id, (cost, 0)) == (cost, 0)


def test_a_second_delivery_of_a_running_video_job_is_deferred_not_paid_twice(
    stack: Stack,
    http: httpx.Client,
    sandbox: httpx.Client,
    account: Account,
    billing: billing_pb2_grpc.BillingStub,
) -> None:
    prompt = f"twice video {time.monotonic_ns()} [sim:delay=4]"

    def tasks() -> int:
        return sum(1 for t in sandbox.get("/_sandbox/tasks").json() if t["prompt"] == prompt)

    job_id = submit(http, "/v1/video/generate", {"prompt": prompt, "duration": 4})["job_id"]
    wait_until(lambda: job_row(stack, job_id)["status"] == "processing")
    deliver_again(stack, job_id, "video")
    job = poll(http, job_id)
    assert job["status"] == "done", job
    time.sleep(JOB_LEASE_SECONDS + 2)
    assert tasks() == 1
    assert job_row(stack, job_id)["attempts"] == 1
    assert captures(billing, account.account_id) == 1
    expected = (100_000_000_000 - 4 * 2_300_000_000, 0)
    assert settled_state(billing, account.account_id, expected) == expected


def test_an_unanswered_job_creation_keeps_its_hold_until_reconciled(
    stack: Stack, http: httpx.Client, account: Account, billing: billing_pb2_grpc.BillingStub
) -> None:
    before = state(billing, account.account_id)
    replicas = stack.config.replica_names("jobs")
    for name in replicas:
        stack.kill(name)
    try:
        response = http.post("/v1/image/generate", json={"prompt": "while jobs is away"})
        assert response.status_code == 503, response.text
        error = response.json()["error"]
        assert error["code"] == "job_status_unknown"
        found = re.search(r"job_[A-Za-z0-9]{26}", error["message"])
        assert found is not None, error
        job_id = found.group(0)
        # The job may exist: its money stays held, not released.
        balance, held = state(billing, account.account_id)
        assert (balance, held) != before and balance == before[0] and held > before[1]
    finally:
        for name in replicas:
            stack.start_service(name)

    def reconciled() -> bool:
        # Several in a row: with two gateway replicas, the edge spreads the GETs, and
        # one gateway's channel to the restarted jobs replicas can come back (from its
        # reconnect backoff) a moment after the other's; until then it answers 503.
        return all(http.get(f"/v1/jobs/{job_id}").status_code == 200 for _ in range(6))

    wait_until(reconciled, seconds=20)
    job = poll(http, job_id)
    assert job["status"] == "failed", job
    assert job["actual_cost_idr"] == "0"
    assert settled_state(billing, account.account_id, before) == before
    # A CreateJob arriving late cannot bring it back: the id stays failed.
    assert job_row(stack, job_id)["status"] == "failed"


def test_a_capture_billing_refuses_shows_nothing_charged_and_is_retried(
    stack: Stack, http: httpx.Client, account: Account, billing: billing_pb2_grpc.BillingStub
) -> None:
    before = state(billing, account.account_id)
    accepted = submit(
        http, "/v1/video/generate", {"prompt": "refused [sim:delay=2]", "duration": 4}
    )
    job_id = accepted["job_id"]
    # The hold is settled behind the job's back (as an expiry would): the
    # capture that follows the job is refused.
    billing.ReleaseHold(
        billing_pb2.ReleaseHoldRequest(hold_id=job_row(stack, job_id)["hold_id"], reason="test")
    )
    job = poll(http, job_id)
    assert job["status"] == "done", job
    wait_until(lambda: job_row(stack, job_id)["settle_refusals"] >= 1)
    row = job_row(stack, job_id)
    assert row["settled_at"] is None and row["settle_retry_at"] is not None  # retried later
    shown = http.get(f"/v1/jobs/{job_id}").json()
    assert shown["actual_cost_idr"] == "0"  # what was really charged
    assert state(billing, account.account_id) == before
    assert captures(billing, account.account_id) == 0


def test_a_creation_key_returns_its_job_for_the_same_request_and_refuses_another(
    stack: Stack, account: Account, billing: billing_pb2_grpc.BillingStub
) -> None:
    """JobState as the gateway calls it: the key is kept with its request's hash."""
    price = 700_000_000  # gpt-image-2 at 1k
    hold = billing.PlaceHold(
        billing_pb2.PlaceHoldRequest(
            account_id=account.account_id,
            amount_micros=price,
            idempotency_key=f"test-hold-{time.monotonic_ns()}",
        )
    )
    request = job_state_pb2.CreateJobRequest(
        account_id=account.account_id,
        hold_id=hold.hold_id,
        model="gpt-image-2",
        modality=Modality.IMAGE.to_proto(),
        spec=job_state_pb2.WorkSpec(prompt="keyed", aspect_ratio="1:1", resolution="1k"),
        unit_price_micros=price,
        estimated_units=1,
        estimated_cost_micros=price,
        idempotency_key=f"call-{time.monotonic_ns()}",
        job_id=new_job_id(),
    )
    with grpc.insecure_channel(stack.config.dial_addr("jobs")) as chan:
        jobs = job_state_pb2_grpc.JobStateStub(
            service_auth.with_token(chan, stack.config.jobs_tokens["gateway"])
        )
        first = jobs.CreateJob(request, timeout=10)
        assert first.job_id == request.job_id
        assert jobs.CreateJob(request, timeout=10).job_id == first.job_id
        # Reconciling a creation that happened finds the job; it is not failed.
        reconciled = jobs.AbandonCreation(request, timeout=10)
        assert JobStatus.from_proto(reconciled.status) is not JobStatus.FAILED
        other = job_state_pb2.CreateJobRequest()
        other.CopyFrom(request)
        other.spec.prompt = "something else"
        for call in (jobs.CreateJob, jobs.AbandonCreation):
            with pytest.raises(grpc.RpcError) as refused:
                call(other, timeout=10)
            assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    with httpx.Client(
        base_url=stack.config.base_url, headers={"Authorization": f"Bearer {account.api_key}"}
    ) as http:
        job = poll(http, first.job_id)
    assert job["status"] == "done" and job["actual_cost_idr"] == "700"
    assert captures(billing, account.account_id) == 1
