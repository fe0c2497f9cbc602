"""Sandbox upstream: a deterministic stand-in for AI providers.

Speaks OpenAI Chat Completions, the OpenAI Images API, and an Ark-style video task API
(BytePlus ModelArk / Volcengine Seedance). Media is described after the chat rules.

Run:  python -m sandbox [--host 127.0.0.1] [--port 9100] [--api-key sk-sandbox]
                                 [--chunk-delay 0]
Env:  AIPORT_SANDBOX_HOST, AIPORT_SANDBOX_PORT, AIPORT_SANDBOX_API_KEY, AIPORT_SANDBOX_CHUNK_DELAY
In-process: sandbox.server.create_app(api_key, chunk_delay=0.0)

Routes (all /v1 and /api/v3 routes need `Authorization: Bearer <key>`):
  POST /v1/chat/completions, GET /v1/models
  POST /v1/images/generations, POST /v1/images/edits
  POST /api/v3/contents/generations/tasks, GET /api/v3/contents/generations/tasks/{id}
  GET /healthz
  GET|DELETE /_sandbox/requests  the last 200 request bodies (chat, images, task creations; not
                                 polls) with the Authorization seen; base64 data: URLs and
                                 uploaded files are logged as type and size only
  GET|DELETE /_sandbox/tasks     every video task kept (the last 10,000), oldest first:
                                 {id, model, prompt, status, created_at}; prompt = the text
                                 as sent, so a test can count creations per prompt
  GET /_sandbox/files/<name>     result files, like pre-signed URLs (no key): <task id>.mp4,
                                 <task id>.png (last frame), img-....png (response_format=url)

Answers: 12 words (by default) from a fixed 64-word vocabulary, picked by a hash of
(model, last user message minus directives, choice index); one word = one token.
  prompt_tokens     = sum over messages of ceil(chars/4) + 4 (+ ceil(len(tools JSON)/4))
  completion_tokens = visible words + reasoning tokens; a tool call costs
                      ceil(len(arguments)/4) + 5
  max_tokens / max_completion_tokens = T: reasoning = min(R, T), visible = min(N, T - reasoning),
                      finish_reason "length" when visible was cut
Tools: tool_choice "auto"/absent calls the first tool when the last message is from the user
(so a tool result gets a text answer); "required" calls the first tool; a named function calls
it. Arguments are sampled from the JSON Schema (enum -> first, string -> "sample", integer -> 1
or minimum, number -> 1.5 or minimum, boolean -> true, array -> one item, object -> all props).
Structured outputs (OpenAI protocol): response_format json_schema makes the content a JSON
value sampled from its schema the same way.

Directives, written anywhere in the LAST user message (several may combine):
  [sim:fail]          HTTP 500, OpenAI server_error body
  [sim:fail-after=N]  stream: drop the connection after N content chunks (words or tool-argument
                      fragments; at the latest before the finish chunk), no [DONE];
                      non-stream: same as [sim:fail]
  [sim:delay=S]       wait S seconds (float, capped at 600) before answering anything
  [sim:chunk-delay=S] stream: pause S seconds (float, capped at 600) between SSE frames,
                      overriding --chunk-delay for this request
  [sim:tokens=N]      exactly N visible completion tokens (0..100000), still subject to max_tokens
  [sim:cached=N]      usage.prompt_tokens_details.cached_tokens = min(N, prompt_tokens)
  [sim:cache-write=N] Anthropic only: cache_creation_input_tokens = N, at most the prompt
                      tokens not read from the cache (other protocols ignore it)
  [sim:reasoning=N]   N reasoning tokens (counted in completion_tokens, capped by max_tokens) and
                      a short reasoning_content (message, or one delta before the content)
  [sim:status=CODE]   answer HTTP CODE (400..599) with an OpenAI error body: 429 rate_limit_error/
                      rate_limit_exceeded, 5xx server_error, other 4xx invalid_request_error
  [sim:echo]          content = compact JSON of the request body minus "messages"
                      (tokens = whitespace-separated pieces)
  [sim:reset]         chat: drop the connection before any response (a connection reset)
  [sim:malformed]     chat: answer 200 with a body that is not JSON / not SSE frames
  [sim:parallel]      with tools (and parallel_tool_calls not false): call every tool, in order
Precedence: delay first, then status, then fail/fail-after. An unknown or malformed directive
(e.g. [sim:token=3]) is a 400, so typos do not pass silently.

Images (OpenAI Images API; errors in OpenAI's shape):
  generations: JSON {model, prompt, n (1..10), size "WIDTHxHEIGHT" (1..8192 each) | "auto",
    quality?, output_format "png" (the only one), response_format "b64_json" (default) |
    "url", background?, moderation?, user?}. Instead of size, xAI's aspect_ratio "W:H" (or
    "auto") with resolution 1k|2k|4k (long side 1024|2048|4096) is accepted. Unknown fields
    are a 400, as OpenAI answers them.
  edits: multipart/form-data with the same fields and one `image[]` (or `image`) file part
    per reference, or JSON with `images: [{image_url|url: data-URL}]` / `image: {url}`. Each
    reference must really be PNG/JPEG/WEBP (sniffed; a wrong declared type is a 400).
  Answer: {created, background, data: [{b64_json} | {url}], output_format: "png", quality,
    size (as requested), usage}. Each image is a REAL PNG (RGB, valid CRCs) of a diagonal
    gradient seeded by (model, prompt minus directives, references' sizes, index), rendered
    with the requested aspect ratio EXACTLY but the long side capped at 512 px (so 2016x864
    comes back 511x219); ratios too fine for 512 px get the nearest size.
    usage: input_tokens = ceil(len(prompt)/4) + 256 per reference image,
           output_tokens = n * ceil(width * height / 1024) for the requested size.

Video tasks (Ark content generation; errors in Ark's shape {error: {code, message, param, type}}):
  create: {model, content: [{type: text, text} | {type: image_url, image_url: {url},
    role: first_frame|last_frame|reference_image} | {type: video_url, ..., role:
    reference_video} | {type: audio_url, ..., role: reference_audio}], resolution 480p|720p|
    1080p|2k|4k (720p), ratio 16:9|4:3|1:1|3:4|9:16|21:9|adaptive (16:9; adaptive with
    references), duration 2..15 or -1 (5), seed, generate_audio (true), return_last_frame,
    watermark, camera_fixed, tools: [{type: web_search}], ...} -> {"id": "cgt-<utc>-<hex>"}.
    Parameters may also come as text flags (--rs 720p --rt 16:9 --dur 5 --seed 11 --wm
    true --cf false); top-level fields win. URLs must be http(s) or base64 data: URLs whose
    bytes match the item type. Ark's rules hold: at most 9 images / 3 videos / 3 audios,
    last_frame needs first_frame, frames and reference media do not mix, audio needs an
    image or video, web_search is text-to-video only. Unknown fields are a 400.
  poll: {id, model, status, error, created_at, updated_at, seed, resolution, ratio, duration
    (as requested: what is billed), framespersecond 24, generate_audio, ...} plus, when
    succeeded, content {video_url, last_frame_url if asked} and usage {completion_tokens =
    total_tokens = ceil(w * h * 24 * duration / 1024)} (w x h: short side 480/720/1080/1440/
    2160 by resolution, long side by ratio; adaptive = 16:9).
  The video is always sandbox/assets/sample.mp4 (2 s, 256x144, H.264, ~7 KB),
  its headers rewritten to say it lasts the task's duration (as a real result would); the
  last frame is a PNG of the task's ratio (long side 512).
  Tasks live in memory, the last 10,000.

Media directives, anywhere in the prompt (only these four; any other is a 400):
                      images                          video task
  [sim:fail]          HTTP 500 server_error           the task ends `failed`, error
                                                      {code: InternalServiceError, message}
  [sim:delay=S]       answer after S s                queued for S/2 s, running until S s, then
                                                      succeeded (or failed with [sim:fail]);
                                                      without it a task is done at once
  [sim:hang]          hold the request until the      running forever (queued for S/2 s first
                      client gives up (at most 1 h)   if a delay is given)
  [sim:status=CODE]   answer HTTP CODE                the create call answers HTTP CODE (no task)
"""
