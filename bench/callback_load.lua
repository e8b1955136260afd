-- wrk's script for bench/delivery.py: distinct Kaleyra v2 status callbacks, as callback_load.py
-- posts them (the same body, byte for byte, but for the numbers).
--
--   wrk -t1 -c128 -d10s -s bench/callback_load.lua http://127.0.0.1:PORT/kaleyra/status -- SECRET
--
-- Every request is a new event (its own message id: the thread's number times 10^9 plus a
-- counter). done() prints one JSON line: {"acked": .., "other": .., "socket_errors": ..,
-- "seconds": ..} (acked: answered under 400, which the receivers only answer 200; other:
-- answered 400 or over), as callback_load.py does.

local threads = {}

function setup(thread)
   thread:set("id", #threads + 1)
   table.insert(threads, thread)
end

local body = '{"meta_object":{"value":{"messaging_product":"whatsapp","statuses":[{"id":"wamid.B%d",'
   .. '"status":"DELIVERED","timestamp":"1764000000","recipient_id":"9198%08d",'
   .. '"conversation":{"id":"c%d","origin":{"type":"marketing"}},"pricing":{"billable":true,'
   .. '"pricing_model":"CBP","category":"marketing"}}]},"field":"messages"},"extra_info":'
   .. '{"message_id":"A%d","trace_id":"t","waba_id":"w","ref":"cust","ref1":"diwali"},'
   .. '"status":"delivered","message_id":"wamid.B%d"}'

function init(args)
   headers = {["X-Callback-Secret"] = args[1], ["Content-Type"] = "application/json"}
   counter = (id or 1) * 1000000000
end

function request()
   counter = counter + 1
   local n = counter
   return wrk.format("POST", nil, headers, body:format(n, n % 100000000, n, n, n))
end

function done(summary, latency, requests)
   local e = summary.errors
   io.write(string.format('{"acked": %d, "other": %d, "socket_errors": %d, "seconds": %.6f}\n',
      summary.requests - e.status, e.status, e.connect + e.read + e.write + e.timeout,
      summary.duration / 1e6))
end
