"""Sandbox payment gateway: a stand-in for Midtrans and Xendit, like sandbox/server.py
stands in for the AI upstreams. It speaks their protocols strictly (paths, field names,
status codes, signature and token schemes: see midtrans.py and xendit.py for what the
docs say and which choices the sandbox made), shows payment pages a person can click
through, and sends real notifications, so our payments adapters run against it in
`make run` and the tests.

Run:  python -m sandbox.payment_gateway serve [--host 127.0.0.1] [--port 9200]
        [--public-url URL] [--midtrans-server-key K] [--midtrans-notification-url URL]
        [--xendit-secret-key K] [--xendit-callback-token T] [--xendit-callback-url URL]
        [--retry-delays 0.5,1,2,5] [--notify-timeout 10]
Env:  AIPORT_PAYGW_HOST, AIPORT_PAYGW_PORT, AIPORT_PAYGW_PUBLIC_URL,
      AIPORT_MIDTRANS_SERVER_KEY (SB-Mid-server-sandbox), AIPORT_MIDTRANS_NOTIFICATION_URL,
      AIPORT_XENDIT_SECRET_KEY (xnd_development_sandbox), AIPORT_XENDIT_CALLBACK_TOKEN
      (sandbox-callback-token), AIPORT_XENDIT_CALLBACK_URL, AIPORT_PAYGW_RETRY_DELAYS,
      AIPORT_PAYGW_NOTIFY_TIMEOUT. Options win over the environment.
In-process: sandbox.payment_gateway.server.create_app(Config(...), clock=time.time)
SIGTERM/SIGINT stop it (retries still waiting are dropped). Keys and the callback token
are never logged.

One host stands for both of Midtrans' hosts (app.sandbox.midtrans.com for Snap,
api.sandbox.midtrans.com for Core API) and for api.xendit.co. Point an adapter's base
URL(s) at http://HOST:PORT.

Midtrans (Basic auth: server key as username, empty password):
  POST /snap/v1/transactions          201 {token, redirect_url = PUBLIC/snap/v4/redirection/<token>}
  GET  /v2/<order_id|transaction_id>/status   the Core API status body; 404 until a payment
                                      method is chosen on the Snap page
  GET  /snap/v4/redirection/<token>   the Snap page: pay by QRIS, BCA/BNI/BRI VA, Mandiri
                                      bill (echannel), Permata VA, GoPay, ShopeePay; let it
                                      expire; cancel. After a click: 303 to callbacks.finish
                                      ?merchant_id&order_id&status_code&transaction_status,
                                      or a done page
  Notifications: POST JSON to X-Override-Notification / X-Append-Notification URLs (from the
  create request) or --midtrans-notification-url; pay = pending then settlement, expire =
  (pending then) expire, cancel = (pending then) cancel, refund, chargeback.
Xendit (Basic auth: secret key as username, empty password):
  POST /v2/invoices                   200 the invoice (status PENDING, invoice_url =
                                      PUBLIC/web/<id>)
  GET  /v2/invoices/<id>              the invoice (PENDING, PAID, SETTLED, EXPIRED)
  POST /invoices/<id>/expire!         expire a PENDING invoice
  GET  /web/<id>                      the invoice page: pay by QRIS, VA BCA/BNI/BRI/MANDIRI/
                                      PERMATA, OVO/DANA/SHOPEEPAY; let it expire. After a
                                      click: 303 to success_redirect_url / failure_redirect_url
                                      or a done page
  Callbacks: POST JSON to --xendit-callback-url with header x-callback-token on PAID,
  EXPIRED and SETTLED.
Both: overdue payments expire on their own (checked every 0.5 s) with a notification.
Failed deliveries (non-2xx, no answer within --notify-timeout) are retried after each of
--retry-delays, the same body each time; Midtrans' per-status retry counts apply (500:
once, 503: 4 times, 400/404: twice, 301-303: never, 307/308 followed).

Test controls (not part of either API; no auth):
  POST /_sandbox/midtrans/<order_id>/<action>  pay {"method": qris|bca_va|bni_va|bri_va|
        echannel|permata_va|gopay|shopeepay} (default qris), choose {"method"} (pending
        only: a method picked, not paid yet), expire, cancel (optional method), refund,
        chargeback (after settlement), notify (re-send the current status: a duplicate).
        200 {order_id, transaction_id, transaction_status, status_code, notifications,
        finish_redirect_url}; 404 unknown order; 409 when the state does not allow it;
        400 {error, field} for a bad action or method.
  POST /_sandbox/xendit/<id>/<action>  pay {"method": QRIS|BCA|BNI|BRI|MANDIRI|PERMATA|OVO|
        DANA|SHOPEEPAY}, expire, settle (PAID -> SETTLED), notify (a duplicate callback).
  GET  /_sandbox/deliveries[?gateway=midtrans|xendit][&key=<order_id|external_id>]
        every delivery attempt (the last 5,000), oldest first: {delivery, gateway, key,
        ref (transaction_id / invoice id), url, attempt, status, error, at, body};
        attempts of one notification share `delivery`. DELETE clears it.
  GET  /_sandbox/healthz  "ok"
Limits: bodies 64 KiB, the last 10,000 transactions and invoices each, order_id 50 and
external_id 255 characters, amounts 1..100,000,000,000 IDR, 3 notification URLs.
"""
