"""Delivery to customers' servers through the durable outbox: every request Heron owes a
customer's server is a `deliveries` row, written in the transaction that made it owed, and kept
until the server has it. The worker (`worker.DeliveryWorker`) claims, sends and records.

- **Enqueue** (`enqueue.enqueue_messages`): one row per (new message, enabled callback of its
  device type and kind). DATA UPLINK/BIDIR and SERVICE STATUS/REPEATER are due when the dedup
  window closes (so they carry every reception of it); DATA_ADVANCED when the horizon has
  passed. Events (`enqueue.enqueue_event`) and job callbacks (`heron.jobs.notify`: no callback,
  event `JOB`, the URL, sealed headers and body in `variables`) are due at once.
- **Claim**: due rows whose (callback, device) has no older pending row (order is kept per
  callback and device), of callbacks that are not dead; a dead callback gets one probe per probe
  interval (its backoff after its consecutive failures, at most `probe_every`). BATCH_URL
  callbacks are claimed a whole batch at a time: once their oldest due row has waited `gather`
  (1 s) or `batch_lines` rows are due. Claimed rows are leased (see Leases) so another worker
  does not take them; on PostgreSQL the claim also skips rows another worker has locked.
- **Duplicates** (`enqueue.owe_duplicates`): a DATA UPLINK/BIDIR delivery of a callback with
  `sendDuplicate` owes one copy per other station that heard the message within the dedup window
  (`{duplicate}` true, that station's `{station}`, `{rssi}`, `{snr}`, `{lat}`, `{lng}`); the
  delivery itself carries the best reception. The copies are written in the transaction that
  starts the delivery (the claim, or the downlink decider taking it over), when every in-window
  reception is known, so ingest pays nothing for them; a unique (delivery, reception) index
  makes a claim made again add none. Each copy is a delivery of its own (its own `webhook-id`,
  retries, order behind the original); in a BATCH_URL batch it rides with the original as one
  more line. Receptions after the window are DATA_ADVANCED's only.
- **Send**: through the callback's channel (`heron.delivery.channels`: URL, BATCH_URL, EMAIL,
  and the job callbacks), rendered at send time from the message (`variables`) and the callback
  as it is then.
- **Refused destinations**: a request the SSRF rules refuse (the URL's name resolves to a
  refused address) fails its delivery for good at once: FAILED with `destination refused: ...`,
  alerted, listed in `callbacks-not-delivered`, sent by a retry by hand once the allow-list
  opens it; it does not count toward the callback's circuit. (A literal refused host is refused
  when the callback is saved; a name that does not resolve is an ordinary, retried failure.)
- **Retry** (`outcomes`, the schedule in `policy.Policy`): a failure (timeout, connection error,
  non-2xx, SMTP error) is tried again after an exponential backoff (base x 2^attempt, capped,
  with jitter) until `give_up` after its creation, then the row is FAILED and listed in
  `callbacks-not-delivered`. `FAILURES_TO_DEAD` consecutive failed requests mark the callback
  dead: its oldest row is then retried at the probe pace (the callback's backoff, at most a
  minute); its first success revives it and releases its backlog at once.
- **Leases** (`leases`): a claimed row's `next_at` moves past the lease and `leased_by` names
  the worker (host:pid:token); the lease is renewed while the request is in flight, so no other
  worker (nor a retry by hand, nor a revived callback's release) sends it again meanwhile. A
  worker takes back at once, at start and every `take_back_every`, the rows of a dead process of
  its host (killed, crashed); other hosts' leases run out.
- **Caps** (`caps`): every `sweep_every`, a callback's pending rows beyond
  `max_pending_per_callback` (the oldest) and pending rows nobody tried past `give_up` (a dead
  callback's backlog, rows waiting behind an older one) become FAILED with `outbox overflow:
  ...`.
- **Alerts** (`alerts`): failures, overflow and a callback going dead mail the device type's
  alert e-mail, at most once per `alert_every` (1 h) per callback (`Callback.alerted_at`, so a
  restart does not mail again).
- **Metrics** (`metrics`, on `/metrics`): delivery latency (creation to delivery) and failed
  attempts per callback, rows given up per callback and reason; outbox depth and the oldest
  pending row's age, computed by one query at scrape time.

At-least-once: a request whose answer is lost (crash between send and record) is sent again
with the same `webhook-id`, for receivers to deduplicate."""
