-- Turns gateway errors into the public error shape, and sets the success
-- status a method asks for (202 for accepted jobs) via the same header.
--
-- The gateway aborts failed calls with trailing metadata x-aiport-http-status
-- and x-aiport-error (the JSON body). Before the first message gRPC sends them
-- trailers-only, so they arrive here as response headers. Only that error path
-- touches the body: successful (and streaming) responses pass untouched.
local INTERNAL = '{"error":{"message":"Internal error. Please try again.","type":"server_error","param":null,"code":"internal_error"}}'
local UNAVAILABLE = '{"error":{"message":"aiport is temporarily unavailable. Please try again.","type":"service_unavailable","param":null,"code":"service_unavailable"}}'
local NOT_FOUND = '{"error":{"message":"No such endpoint. See the API reference for the paths aiport serves.","type":"invalid_request_error","param":null,"code":"not_found"}}'
local BODY_FOR_STATUS = { ["404"] = NOT_FOUND, ["500"] = INTERNAL }
-- The same answers for /v1/messages, in Anthropic's error shape.
local ANTHROPIC_UNAVAILABLE = '{"type":"error","error":{"type":"overloaded_error","message":"aiport is temporarily unavailable. Please try again."}}'
local ANTHROPIC_BODY_FOR_STATUS = {
  ["404"] = '{"type":"error","error":{"type":"not_found_error","message":"No such endpoint. See the API reference for the paths aiport serves."}}',
  ["500"] = '{"type":"error","error":{"type":"api_error","message":"Internal error. Please try again."}}',
}
-- Where a request's protocol is noted between envoy_on_request and envoy_on_response.
local META = "aiport.edge"

-- gRPC codes that reach the edge without our detail (a crash, a restart), or
-- from Envoy's own reply to a gRPC request (UNIMPLEMENTED: no such endpoint).
local STATUS_FOR_GRPC = { ["4"] = "504", ["12"] = "404", ["14"] = "503" }

local function replace(handle, status, body, should_retry, retry_after)
  local h = handle:headers()
  h:replace(":status", status)
  h:replace("content-type", "application/json")
  for _, name in ipairs({ "grpc-status", "grpc-message", "x-aiport-http-status",
                          "x-aiport-error", "x-aiport-should-retry",
                          "x-aiport-retry-after" }) do
    h:remove(name)
  end
  if should_retry ~= nil then
    h:replace("x-should-retry", should_retry)
  end
  -- Seconds to wait before retrying (an upstream rate limit); SDKs honour it.
  if retry_after ~= nil and string.find(retry_after, "^%d+$") ~= nil then
    h:replace("retry-after", retry_after)
  end
  handle:body(true):setBytes(body)
end

local UNAUTHORIZED = '{"error":{"message":"Missing or invalid API key.","type":"authentication_error","param":null,"code":"unauthorized"}}'

local function starts(s, prefix)
  return string.sub(s, 1, #prefix) == prefix
end

-- Headers only our own hops may set. A client's would steer the gateway:
-- grpc-timeout sets its deadline, grpc-encoding how it reads the message,
-- x-aiport-* our internal signals, x-envoy-* Envoy's routing and retries, te
-- the transcoder sets itself. "-bin" names are binary gRPC metadata: gRPC
-- rejects a value that is not base64 (a 500), and no public endpoint reads one.
-- x-envoy-external-address and x-envoy-internal are Envoy's own (it sets or
-- strips them before this filter). x-aiport-client-address is stripped like any
-- x-aiport-* header: the route adds the edge's own value after this filter.
local KEEP = { ["x-envoy-external-address"] = true, ["x-envoy-internal"] = true }

local function internal(name)
  if KEEP[name] then
    return false
  end
  return name == "te" or starts(name, "grpc-") or starts(name, "x-aiport-")
      or starts(name, "x-envoy-") or string.sub(name, -4) == "-bin"
end

-- Names and values that look like a credential. Only Authorization may carry
-- one; anywhere else it is dropped (headers) or redacted (the query string),
-- so it reaches no service, no log and no error message.
local CREDENTIAL_NAMES = { "key", "token", "secret", "passw", "auth", "cookie", "credential",
                           "session", "signature" }

-- Names that contain a credential word but name an identifier, not a secret
-- (GET /v1/usage?key_id=key_...). Their values are still checked below.
-- Idempotency-Key names a request, not a secret: it must reach the gateway (as
-- gRPC metadata), so it is exempt by name; a credential-looking value is refused.
local IDENTIFIER_NAMES = { key_id = true, ["idempotency-key"] = true }

local function credential_name(name)
  local lower = string.lower(name)
  if IDENTIFIER_NAMES[lower] then
    return false
  end
  for _, word in ipairs(CREDENTIAL_NAMES) do
    if string.find(lower, word, 1, true) ~= nil then
      return true
    end
  end
  return false
end

local function credential_value(value)
  local lower = string.lower(value)
  return string.find(lower, "aip_", 1, true) ~= nil or starts(lower, "bearer ") or starts(lower, "sk-")
end

-- The path with credential-looking query values replaced (when
-- `redact_query`; the console reads its own tokens there), and key-looking text
-- anywhere in it too. Returns nil when nothing changes.
local function redacted_path(path, redact_query)
  local base, query = string.match(path, "^([^?]*)%?(.*)$")
  local changed = false
  if query ~= nil and redact_query then
    local parts = {}
    for pair in string.gmatch(query, "[^&]*") do
      if pair ~= "" then
        local name, value = string.match(pair, "^([^=]*)=?(.*)$")
        local plain = string.gsub(string.gsub(value, "%+", " "), "%%(%x%x)",
                                  function(h) return string.char(tonumber(h, 16)) end)
        if value ~= "" and (credential_name(name) or credential_value(plain)) then
          pair = name .. "=REDACTED"
          changed = true
        end
        table.insert(parts, pair)
      end
    end
    path = base .. "?" .. table.concat(parts, "&")
  end
  -- The key prefix itself: a random files token cannot contain it by chance.
  local scrubbed, n = string.gsub(path, "aip_live_%w+", "REDACTED")
  if changed or n > 0 then
    return scrubbed
  end
  return nil
end

-- Which public surface a route serves: "api" (the REST API, transcoded to
-- gRPC), or "console" (the web UI: the console route's filter_context says so).
-- The console is a browser surface: its state lives in cookies (the language
-- now, sessions later) and its links may carry one-time tokens in the query
-- (an email verification), so there it keeps Cookie and the query string, and
-- drops Authorization instead (no API key has any business there).
local function surface(handle)
  for name, value in pairs(handle:filterContext()) do
    if name == "surface" then
      return value
    end
  end
  return "api"
end

-- Before a request becomes gRPC:
-- * A gRPC call (application/grpc...) is refused: the edge serves the REST API
--   only, never a call straight to a service (billing's, say).
-- * An Authorization header that is not printable ASCII cannot be a key. It is
--   refused here, because gRPC would log the undecodable value (key material).
-- * Header names HTTP allows but gRPC metadata does not (e.g. "a|b", "x#y") are
--   dropped: passed on, they make the gRPC call fail and the client get a 500.
-- * Internal and credential-looking headers are dropped, credential-looking
--   query values redacted (see above).
function envoy_on_request(handle)
  local headers = handle:headers()
  local content_type = headers:get("content-type")
  if content_type ~= nil and starts(string.lower(content_type), "application/grpc") then
    handle:respond({ [":status"] = "404", ["content-type"] = "application/json" }, NOT_FOUND)
    return
  end
  local console = surface(handle) == "console"
  local auth = headers:get("authorization")
  -- Anthropic's SDK and tools send the key as x-api-key: on the API it becomes
  -- the one credential header (Authorization wins when both are sent), and is
  -- then dropped like any other credential-named header.
  if not console and auth == nil then
    local api_key = headers:get("x-api-key")
    if api_key ~= nil then
      auth = "Bearer " .. api_key
      headers:replace("authorization", auth)
    end
  end
  if not console and auth ~= nil and string.find(auth, "[^\32-\126]") ~= nil then
    handle:respond({ [":status"] = "401", ["content-type"] = "application/json" }, UNAUTHORIZED)
    return
  end
  -- A non-ASCII Idempotency-Key would fail as gRPC metadata (a 500), and a
  -- credential must not be stored as a request's key: either is sent on empty,
  -- which the gateway refuses with its 400 naming the header (an edge reply
  -- here would be rewritten by the local reply mappers).
  local idempotency_key = headers:get("idempotency-key")
  if not console and idempotency_key ~= nil and (string.find(idempotency_key, "[^\32-\126]") ~= nil
      or credential_value(idempotency_key)) then
    headers:replace("idempotency-key", "")
  end
  local unfit = nil
  for name, value in pairs(headers) do
    local kept = (name == "authorization" and not console) or (name == "cookie" and console)
    if string.sub(name, 1, 1) ~= ":" and (
        (console and name == "authorization")
        or (not kept and (string.find(name, "[^0-9a-z_.%-]") ~= nil or internal(name)
                          or credential_name(name)
                          or (name ~= "idempotency-key" and credential_value(value))))) then
      unfit = unfit or {}
      table.insert(unfit, name)
    end
  end
  if unfit ~= nil then
    for _, name in ipairs(unfit) do
      headers:remove(name)
    end
  end
  if not console and starts(headers:get(":path") or "", "/v1/messages") then
    handle:streamInfo():dynamicMetadata():set(META, "protocol", "anthropic")
  end
  local path = redacted_path(headers:get(":path") or "", not console)
  if path ~= nil then
    headers:replace(":path", path)
    handle:clearRouteCache()
  end
end

-- The same on every route, the console's too: the console never sends these
-- headers, but Envoy's own reply to a gRPC request it refused does.
function envoy_on_response(handle)
  local h = handle:headers()
  local err = h:get("x-aiport-error")
  if err ~= nil then
    replace(handle, h:get("x-aiport-http-status") or "500", err, h:get("x-aiport-should-retry"),
            h:get("x-aiport-retry-after"))
    return
  end
  local grpc_status = h:get("grpc-status")
  if grpc_status ~= nil and grpc_status ~= "0" then
    local status = STATUS_FOR_GRPC[grpc_status] or "500"
    local noted = handle:streamInfo():dynamicMetadata():get(META)
    if noted ~= nil and noted["protocol"] == "anthropic" then
      replace(handle, status, ANTHROPIC_BODY_FOR_STATUS[status] or ANTHROPIC_UNAVAILABLE, nil, nil)
    else
      replace(handle, status, BODY_FOR_STATUS[status] or UNAVAILABLE, nil, nil)
    end
    return
  end
  local wanted = h:get("x-aiport-http-status")
  if wanted ~= nil then
    h:replace(":status", wanted)
    h:remove("x-aiport-http-status")
  end
end
