"""Sandbox upstream: a deterministic stand-in for AI providers (OpenAI Chat Completions).

Run:  python -m services.sandbox [--host 127.0.0.1] [--port 9100] [--api-key sk-sandbox]
                                 [--chunk-delay 0]
Env:  AIPORT_SANDBOX_HOST, AIPORT_SANDBOX_PORT, AIPORT_SANDBOX_API_KEY, AIPORT_SANDBOX_CHUNK_DELAY
In-process: services.sandbox.server.create_app(api_key, chunk_delay=0.0)

Routes: POST /v1/chat/completions, GET /v1/models (both need `Authorization: Bearer <key>`),
GET /healthz, GET|DELETE /_sandbox/requests (the last 200 chat bodies + Authorization seen).

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
  [sim:reasoning=N]   N reasoning tokens (counted in completion_tokens, capped by max_tokens) and
                      a short reasoning_content (message, or one delta before the content)
  [sim:status=CODE]   answer HTTP CODE (400..599) with an OpenAI error body: 429 rate_limit_error/
                      rate_limit_exceeded, 5xx server_error, other 4xx invalid_request_error
  [sim:echo]          content = compact JSON of the request body minus "messages"
                      (tokens = whitespace-separated pieces)
  [sim:parallel]      with tools (and parallel_tool_calls not false): call every tool, in order
Precedence: delay first, then status, then fail/fail-after. An unknown or malformed directive
(e.g. [sim:token=3]) is a 400, so typos do not pass silently.
"""
