"""Every Prometheus metric streamd exports, built on a registry of its own.

Names follow Prometheus conventions (`streamd_` prefix, `_total` counters, base
units). Label values are bounded: source and sink names come from the config;
`kind`, `origin`, `component` and `code` come from small fixed sets. `docs/metrics.md` explains each one.

Every series whose labels are known before anything happens exists from the first
scrape, at 0 (`init_source`, `init_poller`, `init_sink`, and the store's here): a
series that appears only at its first error is invisible to `increase()`, to alerts and
to dashboards until then. A code that an HTTP exchange has not produced yet is not
known; `error` (no answer at all) and, on a webhook, `401` (every route authenticates)
are, so those stand for their families.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info

from . import __version__

_COMMIT_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
# Finer where a healthy sink's delays are, so a p99 read from them means something.
_ACK_BUCKETS = (0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05, 0.075, 0.1,
                0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_BATCH_BUCKETS = (1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000)


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry

        Info("streamd_build", "streamd version", registry=r).info({"version": __version__})
        self.shard = Info("streamd_shard", "This streamd's shard name ([daemon] shard).", registry=r)

        # --- sources
        self.source_received = Counter(
            "streamd_source_events_received_total",
            "Payloads or records a source took in, before normalization.",
            ["source"], registry=r)
        self.source_appended = Counter(
            "streamd_source_events_appended_total",
            "Events a source added to the feed.", ["source"], registry=r)
        self.source_duplicates = Counter(
            "streamd_source_events_duplicate_total",
            "Events a source submitted that were already in the feed (same id), dropped.",
            ["source"], registry=r)
        self.source_rejected = Counter(
            "streamd_source_events_rejected_total",
            "Payloads normalization refused; each went to dead letters.", ["source"], registry=r)
        self.source_connected = Gauge(
            "streamd_source_connected",
            "1 while a source's connection (or last poll) is healthy, else 0.", ["source"], registry=r)
        self.source_reconnects = Counter(
            "streamd_source_reconnects_total",
            "Connection or poll retries after a failure.", ["source"], registry=r)
        self.source_last_event = Gauge(
            "streamd_source_last_event_timestamp_seconds",
            "Unix time of the last event a source appended.", ["source"], registry=r)
        self.source_poll_duration = Histogram(
            "streamd_source_poll_duration_seconds",
            "Duration of one complete poll of a polling source.", ["source"], registry=r)
        self.source_polls = Counter(
            "streamd_source_polls_total",
            "Polls (one listing of one tenant and resource) by outcome: complete or failed.",
            ["source", "outcome"], registry=r)
        self.source_last_poll = Gauge(
            "streamd_source_last_poll_timestamp_seconds",
            "Unix time a polling source last completed a poll.", ["source"], registry=r)
        self.source_requests = Counter(
            "streamd_source_requests_total",
            "HTTP requests a polling source made, by code: the HTTP status, or 'error' for a"
            " timeout or connection failure.", ["source", "code"], registry=r)
        self.source_token_grants = Counter(
            "streamd_source_token_grants_total",
            "OAuth2 token requests by outcome: ok, refused (the provider said no: a dead refresh"
            " token or wrong client secret) or error (unreachable, 5xx; retried).",
            ["source", "outcome"], registry=r)
        self.source_tenant_unknown = Counter(
            "streamd_source_tenant_unknown_total",
            "Events a source emitted without a tenant (`\"tenant\": null`): neither the payload"
            " nor what streamd has seen could place the record (Asteria: the deletion of a"
            " record it never saw).", ["source"], registry=r)
        self.source_deletions_held = Gauge(
            "streamd_source_deletions_held",
            "Deletions a polling source holds back because one listing lost more of the records"
            " it knew than its mass_delete bound allows (Asperion): they wait for `streamd"
            " deletions confirm`, or for listings to agree for mass_delete_confirm_after.",
            ["source"], registry=r)
        self.source_tokens_lost = Counter(
            "streamd_source_refresh_tokens_lost_total",
            "Refresh tokens found spent by a crash during their rotation: the process died"
            " between the identity server's answer and the commit of the new token, and the"
            " source needs `streamd auth`.", ["source"], registry=r)
        self.source_held = Gauge(
            "streamd_source_held_records",
            "Records a polling source saw but holds back until a later poll, because what must"
            " go with them could not be fetched yet (HORISEN: an invoice's traffic reports).",
            ["source"], registry=r)

        # --- store
        self.head = Gauge("streamd_feed_head_seq", "Highest seq in the feed.", registry=r)
        self.commit_seconds = Histogram(
            "streamd_store_commit_duration_seconds",
            "Time to commit one group of batches, including fsync.",
            buckets=_COMMIT_BUCKETS, registry=r)
        self.commit_events = Histogram(
            "streamd_store_commit_events",
            "Events per group commit (appended plus duplicates).",
            buckets=_BATCH_BUCKETS, registry=r)
        self.store_errors = Counter(
            "streamd_store_errors_total",
            "Failed commits, by kind: busy (disk full, locked; retried) or fatal.",
            ["kind"], registry=r)
        self.store_queue = Gauge(
            "streamd_store_queue_batches",
            "Batches submitted and waiting for the writer.", registry=r)
        self.pruned = Counter(
            "streamd_store_pruned_events_total",
            "Events removed by retention.", registry=r)

        # --- sinks
        self.sink_delivered = Counter(
            "streamd_sink_events_delivered_total",
            "Events a sink delivered and confirmed.", ["sink"], registry=r)
        self.sink_failures = Counter(
            "streamd_sink_failures_total",
            "Failed delivery attempts, by kind: retryable or permanent.",
            ["sink", "kind"], registry=r)
        self.sink_offset = Gauge(
            "streamd_sink_offset_seq", "Last seq a sink has passed (delivered or filtered out).",
            ["sink"], registry=r)
        self.sink_lag_events = Gauge(
            "streamd_sink_lag_events", "Feed head minus the sink's offset.", ["sink"], registry=r)
        self.sink_lag_seconds = Gauge(
            "streamd_sink_lag_seconds",
            "Age of the oldest event the sink has not passed yet (0 when caught up).",
            ["sink"], registry=r)
        self.sink_http_requests = Counter(
            "streamd_sink_http_requests_total",
            "HTTP requests an http sink made, by code: the HTTP status, or 'error' for a timeout"
            " or connection failure.", ["sink", "code"], registry=r)
        self.sink_sftp_name_conflicts = Counter(
            "streamd_sink_sftp_name_conflicts_total",
            "Documents an sftp sink refused because their file's name held another document's"
            " file, or one streamd did not write (each once, however often it is tried).",
            ["sink"], registry=r)
        self.sink_postgres_commit_seconds = Histogram(
            "streamd_sink_postgres_commit_duration_seconds",
            "A postgres sink's load of one batch (its parts' transactions, when in parts): COPY,"
            " the upserts, the offset, the commit.",
            ["sink"], buckets=_COMMIT_BUCKETS, registry=r)
        self.sink_postgres_batch_size = Gauge(
            "streamd_sink_postgres_batch_size_events",
            "Events a postgres sink's next batch may hold, adapted to its commit time (at most"
            " batch_max).", ["sink"], registry=r)

        self.sink_nats_batches = Counter(
            "streamd_sink_nats_batches_total",
            "Atomic batches a nats sink sent, by outcome: stored (acked), found (the ack was"
            " lost, the stream holds it), refused (the stream said no), unanswered (no ack).",
            ["sink", "outcome"], registry=r)
        self.sink_nats_skipped = Counter(
            "streamd_sink_nats_skipped_events_total",
            "Events a nats sink did not publish because the stream holds them, by reason: held"
            " (this shard's batch whose ack was lost) or duplicate (another shard published the"
            " same id within the stream's duplicate window).", ["sink", "reason"], registry=r)
        self.sink_nats_ack_delay = Histogram(
            "streamd_sink_nats_ack_delay_seconds",
            "From an event's commit in the feed to JetStream's ack of its batch.",
            ["sink"], buckets=_ACK_BUCKETS, registry=r)
        self.sink_sftp_documents = Counter(
            "streamd_sink_sftp_documents_total",
            "Documents an sftp sink wrote, by op: issue, correction, cancellation, payment.",
            ["sink", "op"], registry=r)

        # --- shared
        self.dead_letters = Counter(
            "streamd_dead_letters_total",
            "Payloads (source) or events (sink) put in the dead-letter table.",
            ["origin", "name"], registry=r)
        self.retries = Counter(
            "streamd_retries_total",
            "Backoff sleeps before a retry, by component (source, sink, store).",
            ["component", "name"], registry=r)
        self.retry_wait_seconds = Counter(
            "streamd_retry_wait_seconds_total",
            "Seconds spent in backoff sleeps before retries.",
            ["component", "name"], registry=r)
        self.component_healthy = Gauge(
            "streamd_component_healthy",
            "1 when a component is healthy as /readyz sees it (component: store, source, sink).",
            ["component", "name"], registry=r)
        self.webhook_requests = Counter(
            "streamd_webhook_requests_total",
            "Webhook requests by route owner and HTTP status code.",
            ["source", "code"], registry=r)

        # --- the HTTP listener (listener: main, or admin when http.admin_listen is set)
        self.http_connections = Gauge(
            "streamd_http_connections",
            "Open connections to a listener.", ["listener"], registry=r)
        self.http_connections_closed = Counter(
            "streamd_http_connections_closed_total",
            "Connections streamd closed on its side, by reason: header_timeout (no whole request"
            " head in time), idle (keep-alive expired), evicted (closed to make room), refused"
            " (no room), body_timeout, drain (cut on shutdown), bad_request (not HTTP, or a head"
            " over 16 KiB: answered 400).", ["listener", "reason"], registry=r)
        self.http_accept_errors = Counter(
            "streamd_http_accept_errors_total",
            "Connections the listener could not accept, by error (EMFILE: out of file"
            " descriptors; ENFILE, ENOBUFS, ENOMEM).", ["listener", "error"], registry=r)

        for kind in ("busy", "fatal"):
            self.store_errors.labels(kind)
        self.retries.labels("store", "writer")
        self.retry_wait_seconds.labels("store", "writer")

    def retried(self, component: str, name: str, wait: float) -> None:
        """One backoff sleep before a retry: every retry streamd makes is counted here."""
        self.retries.labels(component, name).inc()
        self.retry_wait_seconds.labels(component, name).inc(wait)

    def init_source(self, name: str) -> None:
        """Create a source's series at zero so dashboards and alerts see them from the start."""
        for c in (self.source_received, self.source_appended, self.source_duplicates,
                  self.source_rejected, self.source_reconnects):
            c.labels(name)
        self.source_connected.labels(name).set(0)
        self.source_last_event.labels(name).set(0)  # 0: nothing appended since start
        self.dead_letters.labels("source", name)
        self.retries.labels("source", name)
        self.retry_wait_seconds.labels("source", name)

    def init_poller(self, name: str, *, token_grants: bool = False) -> None:
        """A polling source's series: its polls, their duration, its requests (`error`
        standing for the codes), and with `token_grants` its OAuth2 token requests."""
        for outcome in ("complete", "failed"):
            self.source_polls.labels(name, outcome)
        self.source_last_poll.labels(name)
        self.source_poll_duration.labels(name)
        self.source_requests.labels(name, "error")
        if token_grants:
            for outcome in ("ok", "refused", "error"):
                self.source_token_grants.labels(name, outcome)

    def init_sink(self, name: str) -> None:
        self.sink_delivered.labels(name)
        for kind in ("retryable", "permanent"):
            self.sink_failures.labels(name, kind)
        self.sink_offset.labels(name)
        self.sink_lag_events.labels(name)
        self.sink_lag_seconds.labels(name)
        self.dead_letters.labels("sink", name)
        self.retries.labels("sink", name)
        self.retry_wait_seconds.labels("sink", name)
