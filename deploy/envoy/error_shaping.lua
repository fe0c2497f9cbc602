-- Turns gateway errors into the public error shape, and sets the success
-- status a method asks for (202 for accepted jobs) via the same header.
--
-- The gateway aborts failed calls with trailing metadata x-aiport-http-status
-- and x-aiport-error (the JSON body). Before the first message gRPC sends them
-- trailers-only, so they arrive here as response headers. Only that error path
-- touches the body: successful (and streaming) responses pass untouched.
local INTERNAL = '{"error":{"message":"Internal error. Please try again.","type":"server_error","param":null,"code":"internal_error"}}'
local UNAVAILABLE = '{"error":{"message":"aiport is temporarily unavailable. Please try again.","type":"service_unavailable","param":null,"code":"service_unavailable"}}'

-- gRPC codes that reach the edge without our detail (a crash, a restart).
local STATUS_FOR_GRPC = { ["4"] = "504", ["14"] = "503" }

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

-- Before a request becomes gRPC:
-- * An Authorization header that is not printable ASCII cannot be a key. It is
--   refused here, because gRPC would log the undecodable value (key material).
-- * Header names HTTP allows but gRPC metadata does not (e.g. "a|b", "x#y") are
--   dropped: passed on, they make the gRPC call fail and the client get a 500.
function envoy_on_request(handle)
  local headers = handle:headers()
  local auth = headers:get("authorization")
  if auth ~= nil and string.find(auth, "[^\32-\126]") ~= nil then
    handle:respond({ [":status"] = "401", ["content-type"] = "application/json" }, UNAUTHORIZED)
    return
  end
  local unfit = nil
  for name, _ in pairs(headers) do
    if string.sub(name, 1, 1) ~= ":" and string.find(name, "[^0-9a-z_.%-]") ~= nil then
      unfit = unfit or {}
      table.insert(unfit, name)
    end
  end
  if unfit ~= nil then
    for _, name in ipairs(unfit) do
      headers:remove(name)
    end
  end
end

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
    replace(handle, status, status == "500" and INTERNAL or UNAVAILABLE, nil, nil)
    return
  end
  local wanted = h:get("x-aiport-http-status")
  if wanted ~= nil then
    h:replace(":status", wanted)
    h:remove("x-aiport-http-status")
  end
end
